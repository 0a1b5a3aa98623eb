/**
 * The training objectives in float64, per trie edge e = (row, token y, weight W_e), from the
 * log-softmax vector ℓ_e at the edge's row (referenceRowLogProbs), so z_v − z_y = ℓ_ev − ℓ_ey.
 *
 *   CE:   L = −Σ_e W_e ℓ_ey
 *   GEM (Li et al., ICLR 2025), as the engine defines it (native/engine/backend.h):
 *         c_ev = q_ev · w_ev with q_e = softmax(z_e / β) and w_ev = 1 (h linear) or
 *         σ(0.01 (z_ev − z_ey)) (h logsigmoid), both held constant;
 *         L = Σ_e W_e Σ_v c̄_ev (z_ev − z_ey), with c̄ frozen at the current parameters, so
 *         ∂L/∂z_e = W_e (c̄_e − C̄_e e_y), C̄_e = Σ_v c̄_ev.
 */
export type ReferenceObjective = { kind: 'ce' } | { kind: 'gem'; beta: number; h: 'linear' | 'logsigmoid' };

export function ceLoss(rowLogp: Float64Array[], tokens: ArrayLike<number>, weights: ArrayLike<number>): number {
  let loss = 0;
  rowLogp.forEach((l, e) => (loss -= weights[e] * l[tokens[e]]));
  return loss;
}

/** c̄_e for one edge: softmax(ℓ_e / β) (shift-invariant, so ℓ serves for z), times σ(0.01 (z_v − z_y)) for logsigmoid. */
export function gemCoefficients(l: Float64Array, y: number, beta: number, h: 'linear' | 'logsigmoid'): Float64Array {
  let max = -Infinity;
  for (const x of l) max = Math.max(max, x / beta);
  const c = Float64Array.from(l, (x) => Math.exp(x / beta - max));
  const sum = c.reduce((a, b) => a + b, 0);
  for (let v = 0; v < c.length; v++) {
    c[v] /= sum;
    if (h === 'logsigmoid') c[v] *= 1 / (1 + Math.exp(-0.01 * (l[v] - l[y])));
  }
  return c;
}

/** Σ_e W_e Σ_v c̄_ev (z_ev − z_ey) with the given (frozen) coefficients. */
export function gemSurrogate(rowLogp: Float64Array[], tokens: ArrayLike<number>, weights: ArrayLike<number>, frozen: Float64Array[]): number {
  let loss = 0;
  rowLogp.forEach((l, e) => {
    const y = tokens[e];
    let s = 0;
    for (let v = 0; v < l.length; v++) s += frozen[e][v] * (l[v] - l[y]);
    loss += weights[e] * s;
  });
  return loss;
}

/**
 * The loss whose gradient the engine's step computes, as a function of the row log-probs at
 * perturbed parameters, with GEM's coefficients frozen from `atTheta` (the unperturbed ones).
 */
export function objectiveSurrogate(objective: ReferenceObjective, atTheta: Float64Array[], tokens: ArrayLike<number>, weights: ArrayLike<number>): (rowLogp: Float64Array[]) => number {
  if (objective.kind === 'ce') return (rowLogp) => ceLoss(rowLogp, tokens, weights);
  const frozen = atTheta.map((l, e) => gemCoefficients(l, tokens[e], objective.beta, objective.h));
  return (rowLogp) => gemSurrogate(rowLogp, tokens, weights, frozen);
}
