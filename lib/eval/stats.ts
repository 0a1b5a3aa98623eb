/**
 * The statistics the metrics share: entropy of counts and seeded bootstrap intervals.
 */
import { seededRandom } from '../tasks/bio-attributes.js';

/** Entropy (nats) of the empirical distribution with these counts: −Σ (c/N) log (c/N). */
export function entropyOfCounts(counts: Iterable<number>): number {
  let total = 0;
  let sumCLogC = 0;
  for (const c of counts) {
    if (c <= 0) continue;
    total += c;
    sumCLogC += c * Math.log(c);
  }
  // −Σ (c/N) log(c/N) = log N − (Σ c log c) / N
  return total > 0 ? Math.max(0, Math.log(total) - sumCLogC / total) : 0;
}

/** Entropy (nats) of a probability vector. */
export function entropy(p: readonly number[]): number {
  return -p.reduce((s, x) => (x > 0 ? s + x * Math.log(x) : s), 0);
}

/** A 95% (or other) interval: [low, high]. */
export type Interval = [number, number];

export interface BootstrapOptions {
  /** Resamples (default 1000). */
  resamples?: number;
  /** Seed of the resampling (default 0). */
  seed?: number;
}

/**
 * Bootstrap resamples of n items: for each resample, how many times each item was drawn
 * (n draws with replacement). Seeded, so the same seed gives the same intervals.
 */
export function bootstrapWeights(n: number, options: BootstrapOptions = {}): Uint32Array[] {
  const resamples = options.resamples ?? 1000;
  const random = seededRandom(options.seed ?? 0);
  const out: Uint32Array[] = [];
  for (let r = 0; r < resamples; r++) {
    const w = new Uint32Array(n);
    for (let i = 0; i < n; i++) w[Math.floor(random() * n)]++;
    out.push(w);
  }
  return out;
}

/** The q-quantile of sorted values, linearly interpolated. */
function quantile(sorted: Float64Array, q: number): number {
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (at - lo) * (sorted[hi] - sorted[lo]);
}

/**
 * A bootstrap interval re-centred on the point estimate: the 2.5% and 97.5% quantiles of the
 * replicates, shifted by (estimate − median of the replicates), then clipped to [min, max].
 *
 * Plug-in entropy and coverage of a resample are biased low (a resample of N draws from the
 * empirical distribution repeats items, so it sees fewer distinct answers than N fresh samples
 * would): plain percentile intervals would then often lie wholly below the estimate. Re-centring
 * removes that shift and keeps the spread, so the interval reads as "what another run of N
 * samples would give".
 */
export function intervalOf(estimate: number, replicates: ArrayLike<number>, bounds: { min?: number; max?: number } = {}, level = 0.95): Interval {
  if (replicates.length === 0) return [estimate, estimate];
  const sorted = Float64Array.from(replicates).sort();
  const shift = estimate - quantile(sorted, 0.5);
  const clip = (x: number) => Math.min(bounds.max ?? Infinity, Math.max(bounds.min ?? -Infinity, x));
  return [clip(quantile(sorted, (1 - level) / 2) + shift), clip(quantile(sorted, (1 + level) / 2) + shift)];
}
