/**
 * Pearson's χ² goodness-of-fit test, for checking sampled frequencies against exact
 * probabilities. Cells expected to hold fewer than `minExpected` draws are pooled into one.
 */

/** log Γ(x) for x > 0 (Lanczos, g = 7, n = 9; about 15 significant digits). */
export function logGamma(x: number): number {
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  const z = x - 1;
  let a = c[0];
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Q(a, x) = Γ(a, x) / Γ(a): the regularised upper incomplete gamma function. */
export function upperGammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const front = Math.exp(a * Math.log(x) - x - logGamma(a));
  if (x < a + 1) {
    // Series for P(a, x) = x^a e^-x / Γ(a+1) · Σ x^n / ((a+1)…(a+n)).
    let term = 1 / a, sum = term;
    for (let n = 1; n < 1000 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
      term *= x / (a + n);
      sum += term;
    }
    return Math.max(0, 1 - front * sum);
  }
  // Continued fraction for Q(a, x) (modified Lentz).
  const tiny = 1e-300;
  let b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return front * h;
}

/** P(χ²_dof ≥ x). */
export function chiSquareSurvival(x: number, dof: number): number {
  return upperGammaQ(dof / 2, x / 2);
}

export interface ChiSquareResult {
  statistic: number;
  dof: number;
  pValue: number;
  cells: number;
}

/** Tests observed counts against probabilities (which must sum to 1). */
export function chiSquareTest(observed: readonly number[], probs: readonly number[], minExpected = 5): ChiSquareResult {
  const n = observed.reduce((a, b) => a + b, 0);
  const cells: { o: number; e: number }[] = [];
  const pooled = { o: 0, e: 0 };
  observed.forEach((o, i) => {
    const e = probs[i] * n;
    if (e < minExpected) {
      pooled.o += o;
      pooled.e += e;
    } else cells.push({ o, e });
  });
  if (pooled.e > 0 || pooled.o > 0) cells.push(pooled);
  const statistic = cells.reduce((s, { o, e }) => s + (e > 0 ? (o - e) ** 2 / e : o > 0 ? Infinity : 0), 0);
  const dof = cells.length - 1;
  return { statistic, dof, pValue: chiSquareSurvival(statistic, dof), cells: cells.length };
}
