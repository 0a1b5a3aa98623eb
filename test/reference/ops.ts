/**
 * Plain float64 references for the backend ops, written for clarity, not speed: the kernels'
 * tests compare against these. Inputs are the same float32 arrays the kernels get; every
 * intermediate is a JavaScript number (float64).
 */

import { rng } from './linear.js';

type Vec = ArrayLike<number>;

// ------------------------------------------------------------------ test helpers

/** A seeded generator (mulberry32) of uniforms in [0, 1) and standard normals. */
export class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = rng(seed);
  }
  uniform(): number {
    return this.next();
  }
  normal(): number {
    const u1 = 1 - this.uniform();
    const u2 = this.uniform();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  /** n normals times scale, as float32. */
  normals(n: number, scale = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; ++i) out[i] = scale * this.normal();
    return out;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; --i) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }
}

/** ‖out − ref‖ / ‖ref‖, Infinity when out holds a NaN or the lengths differ. */
export function relErr(out: Vec, ref: Vec): number {
  if (out.length !== ref.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; ++i) {
    if (Number.isNaN(out[i])) return Infinity;
    num += (out[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num) / Math.sqrt(den);
}

/** a − b elementwise, in float64. */
export function sub(a: Vec, b: Vec): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; ++i) out[i] = a[i] - b[i];
  return out;
}

const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

function logSumExp(z: Vec): number {
  let m = -Infinity;
  for (let i = 0; i < z.length; ++i) m = Math.max(m, z[i]);
  let s = 0;
  for (let i = 0; i < z.length; ++i) s += Math.exp(z[i] - m);
  return m + Math.log(s);
}

/** softmax(z / temperature) in float64. */
export function softmax(z: Vec, temperature = 1): Float64Array {
  const scaled = Array.from(z, (x) => x / temperature);
  const lse = logSumExp(scaled);
  return Float64Array.from(scaled, (x) => Math.exp(x - lse));
}

/** rows x out = x [rows x inF] . W^T, W [out x inF]. */
export function matmulNT(x: Vec, w: Vec, rows: number, inF: number, out: number): Float64Array {
  const y = new Float64Array(rows * out);
  for (let r = 0; r < rows; ++r)
    for (let o = 0; o < out; ++o) {
      let s = 0;
      for (let i = 0; i < inF; ++i) s += x[r * inF + i] * w[o * inF + i];
      y[r * out + o] = s;
    }
  return y;
}

// ------------------------------------------------------------------ elementwise and per-row ops

export function embedding(tokens: Vec, table: Vec, dim: number): Float64Array {
  const out = new Float64Array(tokens.length * dim);
  for (let r = 0; r < tokens.length; ++r) for (let d = 0; d < dim; ++d) out[r * dim + d] = table[tokens[r] * dim + d];
  return out;
}

export function rmsnormForward(x: Vec, w: Vec, rows: number, dim: number, eps: number): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(rows * dim);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; ++r) {
    let ss = 0;
    for (let d = 0; d < dim; ++d) ss += x[r * dim + d] ** 2;
    rstd[r] = 1 / Math.sqrt(ss / dim + eps);
    for (let d = 0; d < dim; ++d) y[r * dim + d] = x[r * dim + d] * rstd[r] * w[d];
  }
  return { y, rstd };
}

/** d(rmsnorm)/dx . dy: dx = rstd (dy w) − x rstd^3 mean(dy w x). */
export function rmsnormBackward(dy: Vec, x: Vec, w: Vec, rows: number, dim: number, eps: number): Float64Array {
  const { rstd } = rmsnormForward(x, w, rows, dim, eps);
  const dx = new Float64Array(rows * dim);
  for (let r = 0; r < rows; ++r) {
    let m = 0;
    for (let d = 0; d < dim; ++d) m += dy[r * dim + d] * w[d] * x[r * dim + d];
    m /= dim;
    const s = rstd[r];
    for (let d = 0; d < dim; ++d) dx[r * dim + d] = s * dy[r * dim + d] * w[d] - x[r * dim + d] * s * s * s * m;
  }
  return dx;
}

/**
 * Rotary embedding (Hugging Face layout) by sign * pos * invFreq, x [rows x heads x headDim]:
 * the first rotaryDim dims of each head rotate, cos and sin times `scale`; the rest pass through.
 */
export function rope(x: Vec, pos: Vec, invFreq: Vec, heads: number, headDim: number, sign = 1, rotaryDim = headDim, scale = 1): Float64Array {
  const half = rotaryDim / 2;
  const out = Float64Array.from(x);
  for (let r = 0; r < pos.length; ++r)
    for (let h = 0; h < heads; ++h) {
      const base = (r * heads + h) * headDim;
      for (let i = 0; i < half; ++i) {
        const t = sign * pos[r] * invFreq[i];
        const a = x[base + i];
        const b = x[base + i + half];
        out[base + i] = scale * (a * Math.cos(t) - b * Math.sin(t));
        out[base + i + half] = scale * (a * Math.sin(t) + b * Math.cos(t));
      }
    }
  return out;
}

export function swigluForward(gate: Vec, up: Vec): Float64Array {
  return Float64Array.from(gate, (g, i) => g * sigmoid(g) * up[i]);
}

export function swigluBackward(dh: Vec, gate: Vec, up: Vec): { dgate: Float64Array; dup: Float64Array } {
  const dgate = new Float64Array(gate.length);
  const dup = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; ++i) {
    const s = sigmoid(gate[i]);
    dgate[i] = dh[i] * up[i] * s * (1 + gate[i] * (1 - s));
    dup[i] = dh[i] * gate[i] * s;
  }
  return { dgate, dup };
}

const GELU_C = Math.sqrt(2 / Math.PI);
/** h = gelu_tanh(gate) · up, gelu_tanh(x) = x/2 (1 + tanh(√(2/π) (x + 0.044715 x³))). */
export function gegluForward(gate: Vec, up: Vec): Float64Array {
  return Float64Array.from(gate, (g, i) => 0.5 * g * (1 + Math.tanh(GELU_C * (g + 0.044715 * g ** 3))) * up[i]);
}

export function gegluBackward(dh: Vec, gate: Vec, up: Vec): { dgate: Float64Array; dup: Float64Array } {
  const dgate = new Float64Array(gate.length);
  const dup = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; ++i) {
    const g = gate[i];
    const t = Math.tanh(GELU_C * (g + 0.044715 * g ** 3));
    const gelu = 0.5 * g * (1 + t);
    const dgelu = 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * g * g);
    dgate[i] = dh[i] * up[i] * dgelu;
    dup[i] = dh[i] * gelu;
  }
  return { dgate, dup };
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
  gradScale: number;
}

/**
 * One step of torch.optim.AdamW (single-tensor path, amsgrad off, maximize off), in place on
 * float64 state, after clip_grad_norm_ has multiplied the gradient by gradScale:
 *   param.mul_(1 - lr * weight_decay)
 *   exp_avg.lerp_(grad, 1 - beta1);  exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *   step_size = lr / (1 - beta1^t);  denom = exp_avg_sq.sqrt() / sqrt(1 - beta2^t) + eps
 *   param.addcdiv_(exp_avg, denom, value=-step_size)
 */
export function adamwStep(param: Float64Array, grad: Vec, m: Float64Array, v: Float64Array, h: AdamWHyper): void {
  const bias1 = 1 - h.beta1 ** h.step;
  const bias2Sqrt = Math.sqrt(1 - h.beta2 ** h.step);
  const stepSize = h.lr / bias1;
  for (let i = 0; i < param.length; ++i) {
    const g = grad[i] * h.gradScale;
    param[i] *= 1 - h.lr * h.weightDecay;
    m[i] += (g - m[i]) * (1 - h.beta1);
    v[i] = v[i] * h.beta2 + (1 - h.beta2) * g * g;
    param[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) / bias2Sqrt + h.eps);
  }
}

// ------------------------------------------------------------------ tree-masked attention

export interface AttentionProblem {
  qRows: number;
  kvRows: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  scale: number;
  /** Scores c·tanh(s/c) when > 0 (Gemma 2). */
  softcap?: number;
  keyOffsets: Int32Array;
  keyRows: Int32Array;
}

/** c·tanh(s/c), or s without a cap; and its derivative. */
const cap = (s: number, c?: number) => (c ? c * Math.tanh(s / c) : s);
const capSlope = (s: number, c?: number) => (c ? 1 - Math.tanh(s / c) ** 2 : 1);

/** out = softmax(scale q k^T over each row's keys) v per q head; lse per (row, head). */
export function attentionForward(q: Vec, k: Vec, v: Vec, p: AttentionProblem): { out: Float64Array; lse: Float64Array } {
  const hd = p.headDim;
  const group = p.qHeads / p.kvHeads;
  const out = new Float64Array(p.qRows * p.qHeads * hd);
  const lse = new Float64Array(p.qRows * p.qHeads);
  for (let i = 0; i < p.qRows; ++i)
    for (let h = 0; h < p.qHeads; ++h) {
      const kvh = Math.floor(h / group);
      const qo = (i * p.qHeads + h) * hd;
      const keys = p.keyRows.subarray(p.keyOffsets[i], p.keyOffsets[i + 1]);
      const s = Array.from(keys, (j) => {
        let d = 0;
        for (let c = 0; c < hd; ++c) d += q[qo + c] * k[(j * p.kvHeads + kvh) * hd + c];
        return cap(p.scale * d, p.softcap);
      });
      const l = logSumExp(s);
      lse[i * p.qHeads + h] = l;
      keys.forEach((j, n) => {
        const w = Math.exp(s[n] - l);
        for (let c = 0; c < hd; ++c) out[qo + c] += w * v[(j * p.kvHeads + kvh) * hd + c];
      });
    }
  return { out, lse };
}

/** Gradients of <out, dout> with respect to q, k and v (probabilities recomputed in float64). */
export function attentionBackward(dout: Vec, q: Vec, k: Vec, v: Vec, p: AttentionProblem): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const hd = p.headDim;
  const group = p.qHeads / p.kvHeads;
  const { out, lse } = attentionForward(q, k, v, p);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  for (let i = 0; i < p.qRows; ++i)
    for (let h = 0; h < p.qHeads; ++h) {
      const kvh = Math.floor(h / group);
      const qo = (i * p.qHeads + h) * hd;
      let D = 0;
      for (let c = 0; c < hd; ++c) D += dout[qo + c] * out[qo + c];
      for (let n = p.keyOffsets[i]; n < p.keyOffsets[i + 1]; ++n) {
        const ko = (p.keyRows[n] * p.kvHeads + kvh) * hd;
        let s = 0;
        let dp = 0;
        for (let c = 0; c < hd; ++c) {
          s += q[qo + c] * k[ko + c];
          dp += dout[qo + c] * v[ko + c];
        }
        const prob = Math.exp(cap(p.scale * s, p.softcap) - lse[i * p.qHeads + h]);
        const ds = prob * (dp - D) * p.scale * capSlope(p.scale * s, p.softcap);
        for (let c = 0; c < hd; ++c) {
          dq[qo + c] += ds * k[ko + c];
          dk[ko + c] += ds * q[qo + c];
          dv[ko + c] += prob * dout[qo + c];
        }
      }
    }
  return { dq, dk, dv };
}

// ------------------------------------------------------------------ log-probabilities of trie edges

export type ObjectiveKind = 'ce' | 'gem-linear' | 'gem-logsigmoid';

export interface LogprobProblem {
  hidden: Vec;
  head: Vec;
  vocab: number;
  dim: number;
  parentRows: Vec;
  edgeParent: Vec;
  edgeToken: Vec;
  edgeWeight: Vec;
  objective: { kind: ObjectiveKind; beta: number };
  /** Logits c·tanh(z/c) when > 0 (Gemma 2's final soft-cap). */
  logitSoftcap?: number;
}

export interface LogprobReference {
  /** Per parent: log-sum-exp of z and of z / beta. */
  lse: Float64Array;
  lseBeta: Float64Array;
  /** Per edge: log softmax(z)_y, the objective's loss (before the weight), z_y, C. */
  edgeLogp: Float64Array;
  edgeLoss: Float64Array;
  zy: Float64Array;
  C: Float64Array;
  /** Per edge: the coefficients c_v over the vocabulary (softmax(z) for CE, q_v w_v for GEM). */
  coeffs: Float64Array[];
  /** d(sum_e W_e loss_e)/d hidden, with GEM's c held constant: [hidden rows x dim]. */
  dhidden: Float64Array;
}

/**
 * The edge log-probabilities and losses from the full logits z = head . h of every parent
 * (see Objective in native/engine/backend.h):
 *   CE:   loss = −log softmax(z)_y;  dz = W (softmax(z) − e_y)
 *   GEM:  c_v = q_v w_v, q = softmax(z / beta), w_v = 1 (linear) or sigmoid(0.01 (z_v − z_y));
 *         loss = sum_v c_v z_v − C z_y with C = sum_v c_v;  dz = W (c − C e_y)
 */
export function logprobs(p: LogprobProblem): LogprobReference {
  const { dim, vocab } = p;
  const P = p.parentRows.length;
  const E = p.edgeToken.length;
  const parentsH = new Float64Array(P * dim);
  for (let i = 0; i < P; ++i) for (let d = 0; d < dim; ++d) parentsH[i * dim + d] = p.hidden[p.parentRows[i] * dim + d];
  const raw = matmulNT(parentsH, p.head, P, dim, vocab);
  const Z = raw.map((z) => cap(z, p.logitSoftcap));
  const rowZ = (i: number) => Z.subarray(i * vocab, (i + 1) * vocab);
  const lse = Float64Array.from({ length: P }, (_, i) => logSumExp(rowZ(i)));
  const lseBeta = Float64Array.from({ length: P }, (_, i) => logSumExp(Array.from(rowZ(i), (z) => z / p.objective.beta)));
  const ref: LogprobReference = {
    lse,
    lseBeta,
    edgeLogp: new Float64Array(E),
    edgeLoss: new Float64Array(E),
    zy: new Float64Array(E),
    C: new Float64Array(E),
    coeffs: [],
    dhidden: new Float64Array(p.hidden.length),
  };
  for (let e = 0; e < E; ++e) {
    const par = p.edgeParent[e];
    const z = rowZ(par);
    const y = p.edgeToken[e];
    ref.zy[e] = z[y];
    ref.edgeLogp[e] = z[y] - lse[par];
    const dz = new Float64Array(vocab);
    if (p.objective.kind === 'ce') {
      ref.edgeLoss[e] = -ref.edgeLogp[e];
      ref.C[e] = 1;
      for (let v = 0; v < vocab; ++v) dz[v] = Math.exp(z[v] - lse[par]);
      ref.coeffs.push(Float64Array.from(dz));
    } else {
      let C = 0;
      let CZ = 0;
      for (let v = 0; v < vocab; ++v) {
        const q = Math.exp(z[v] / p.objective.beta - lseBeta[par]);
        const w = p.objective.kind === 'gem-logsigmoid' ? sigmoid(0.01 * (z[v] - z[y])) : 1;
        dz[v] = q * w;
        C += dz[v];
        CZ += dz[v] * z[v];
      }
      ref.C[e] = C;
      ref.edgeLoss[e] = CZ - C * z[y];
      ref.coeffs.push(Float64Array.from(dz));
    }
    dz[y] -= ref.C[e];
    const row = p.parentRows[par];
    for (let v = 0; v < vocab; ++v) {
      const g = p.edgeWeight[e] * dz[v] * capSlope(raw[par * vocab + v], p.logitSoftcap);
      for (let d = 0; d < dim; ++d) ref.dhidden[row * dim + d] += g * p.head[v * dim + d];
    }
  }
  return ref;
}

/**
 * sum_e W_e loss_e as a function of hidden, for finite differences. CE is the true loss; for
 * GEM the coefficients c (from `frozen`) are held constant, as the objective defines.
 */
export function weightedLoss(p: LogprobProblem, hidden: Vec, frozen: LogprobReference): number {
  const { dim, vocab } = p;
  let total = 0;
  for (let e = 0; e < p.edgeToken.length; ++e) {
    const row = p.parentRows[p.edgeParent[e]];
    const h = Array.from({ length: dim }, (_, d) => hidden[row * dim + d]);
    const z = Array.from({ length: vocab }, (_, v) => {
      let s = 0;
      for (let d = 0; d < dim; ++d) s += h[d] * p.head[v * dim + d];
      return cap(s, p.logitSoftcap);
    });
    const y = p.edgeToken[e];
    let loss: number;
    if (p.objective.kind === 'ce') loss = logSumExp(z) - z[y];
    else {
      const c = frozen.coeffs[e];
      loss = 0;
      for (let v = 0; v < vocab; ++v) loss += c[v] * z[v];
      loss -= frozen.C[e] * z[y];
    }
    total += p.edgeWeight[e] * loss;
  }
  return total;
}
