import { native } from '../../lib/native.js';
import { matmulNT, relErr, Rng, softmax } from '../reference/ops.js';

const ops = native().ops('cpu');

interface Setup {
  hidden: Float32Array;
  head: Float32Array;
  vocab: number;
  dim: number;
  /** float64 logits per hidden row */
  z: Float64Array[];
}

function setup(seed: number, rows: number, vocab: number, dim: number, logitScale: number): Setup {
  const rng = new Rng(seed);
  const hidden = rng.normals(rows * dim);
  const head = rng.normals(vocab * dim, logitScale / Math.sqrt(dim));
  const Z = matmulNT(hidden, head, rows, dim, vocab);
  return { hidden, head, vocab, dim, z: Array.from({ length: rows }, (_, r) => Z.slice(r * vocab, (r + 1) * vocab)) };
}

function sample(s: Setup, rows: number[], streams: number[], p: { temperature?: number; topK?: number; topP?: number; seed?: number; step?: number; logitSoftcap?: number }) {
  return ops.sample({ hidden: s.hidden, head: s.head, vocab: s.vocab, dim: s.dim, rows: Int32Array.from(rows), streams: Uint32Array.from(streams), ...p });
}

/** Token ids by descending logit (lower id first on ties). */
const ranked = (z: Float64Array) => Array.from(z, (_, i) => i).sort((a, b) => z[b] - z[a] || a - b);

/**
 * The tokens that survive top-k then top-p at this temperature, with their renormalised
 * probabilities; throws when a cumulative probability sits within 1e-4 of top_p (the kept set
 * would then hinge on rounding and the test would prove nothing).
 */
function nucleus(z: Float64Array, temperature: number, topK: number, topP: number): Map<number, number> {
  const order = ranked(z).slice(0, topK > 0 ? topK : z.length);
  const probs = softmax(order.map((i) => z[i]), temperature);
  let keep = order.length;
  let acc = 0;
  for (let i = 0; i < order.length && topP < 1; ++i) {
    acc += probs[i];
    if (Math.abs(acc - topP) < 1e-4) throw new Error('test logits put a cumulative probability at top_p');
    if (acc >= topP) {
      keep = i + 1;
      break;
    }
  }
  const mass = probs.slice(0, keep).reduce((a, b) => a + b, 0);
  return new Map(order.slice(0, keep).map((t, i) => [t, probs[i] / mass]));
}

/** Pearson chi-squared of counts against probabilities, bins with expectation < 5 pooled. */
function chiSquared(counts: Map<number, number>, probs: Map<number, number>, n: number): { chi2: number; df: number } {
  let chi2 = 0;
  let bins = 0;
  let pooledExpected = 0;
  let pooledObserved = 0;
  for (const [t, p] of probs) {
    const expected = n * p;
    const observed = counts.get(t) ?? 0;
    if (expected < 5) {
      pooledExpected += expected;
      pooledObserved += observed;
      continue;
    }
    chi2 += (observed - expected) ** 2 / expected;
    ++bins;
  }
  if (pooledExpected > 0) {
    chi2 += (pooledObserved - pooledExpected) ** 2 / pooledExpected;
    ++bins;
  }
  return { chi2, df: bins - 1 };
}

/** The 0.999 quantile of chi-squared with df degrees of freedom (Wilson-Hilferty). */
const chi2Critical = (df: number) => df * (1 - 2 / (9 * df) + 3.0902 * Math.sqrt(2 / (9 * df))) ** 3;

function counts(tokens: Int32Array): Map<number, number> {
  const c = new Map<number, number>();
  for (const t of tokens) c.set(t, (c.get(t) ?? 0) + 1);
  return c;
}

describe('sampling from full-vocabulary logits', () => {
  it('greedy picks the argmax and reports log softmax at temperature 1', () => {
    const s = setup(1, 6, 5000, 48, 4);
    const argmax = s.z.map((z) => ranked(z)[0]);
    s.z.forEach((z, r) => expect(z[argmax[r]] - z[ranked(z)[1]]).toBeGreaterThan(1e-3));
    const rows = [0, 1, 2, 3, 4, 5];
    const got = sample(s, rows, rows, { temperature: 0 });
    expect(Array.from(got.tokens)).toEqual(argmax);
    const ref = rows.map((r) => Math.log(softmax(s.z[r])[argmax[r]]));
    expect(relErr(got.logp, ref)).toBeLessThan(1e-5);
  });

  it('soft-caps the logits (Gemma 2) before drawing and in the log-prob it reports', () => {
    const s = setup(2, 4, 3000, 32, 6);
    const cap = 5;
    const capped = s.z.map((z) => z.map((v) => cap * Math.tanh(v / cap)));
    const rows = [0, 1, 2, 3];
    const got = sample(s, rows, rows, { temperature: 1, seed: 3, logitSoftcap: cap });
    const ref = rows.map((r) => Math.log(softmax(capped[r])[got.tokens[r]]));
    expect(relErr(got.logp, ref)).toBeLessThan(1e-5);
    const uncapped = rows.map((r) => Math.log(softmax(s.z[r])[got.tokens[r]]));
    expect(relErr(uncapped, ref)).toBeGreaterThan(1e-2);
  });

  it('gives the same token for the same (seed, stream, step) however the draws are batched', () => {
    const s = setup(2, 6, 5000, 48, 2);
    const rows = [0, 1, 2, 3, 4, 5];
    const streams = [100, 101, 102, 103, 104, 105];
    const p = { temperature: 0.9, seed: 42, step: 7 };
    const together = sample(s, rows, streams, p);
    const alone = rows.map((r) => sample(s, [r], [streams[r]], p));
    const reversed = sample(s, [...rows].reverse(), [...streams].reverse(), p);
    const mixed = sample(s, [5, 0, 3, 0, 1, 2, 4, 3], [105, 7, 103, 100, 101, 102, 104, 9], p);
    for (const r of rows) {
      expect(alone[r].tokens[0]).toBe(together.tokens[r]);
      expect(reversed.tokens[5 - r]).toBe(together.tokens[r]);
      expect(alone[r].logp[0]).toBeCloseTo(together.logp[r], 5);
    }
    expect(Array.from(mixed.tokens).filter((_, i) => i !== 1 && i !== 7)).toEqual([5, 3, 0, 1, 2, 4].map((r) => together.tokens[r]));
    // A different step or seed draws afresh.
    const nextStep = sample(s, rows, streams, { ...p, step: 8 });
    const otherSeed = sample(s, rows, streams, { ...p, seed: 43 });
    expect(Array.from(nextStep.tokens)).not.toEqual(Array.from(together.tokens));
    expect(Array.from(otherSeed.tokens)).not.toEqual(Array.from(together.tokens));
  });

  const draws = 6000;
  const filters = [
    { name: 'temperature 1', temperature: 1, topK: 0, topP: 1 },
    { name: 'temperature 0.6', temperature: 0.6, topK: 0, topP: 1 },
    { name: 'top-k 4', temperature: 1, topK: 4, topP: 1 },
    { name: 'top-p 0.7', temperature: 1, topK: 0, topP: 0.7 },
    { name: 'top-k 6 then top-p 0.8 at temperature 1.4', temperature: 1.4, topK: 6, topP: 0.8 },
  ];
  filters.forEach((f, n) =>
    it(`${f.name}: keeps exactly the right tokens, and frequencies pass chi-squared against the exact softmax`, () => {
      const s = setup(3, 1, 24, 16, 1.5);
      const want = nucleus(s.z[0], f.temperature, f.topK, f.topP);
      const got = sample(s, new Array(draws).fill(0), Array.from({ length: draws }, (_, i) => i), { ...f, seed: 2024 + n });
      const c = counts(got.tokens);
      // Nothing outside the kept set; everything expected at least 10 times drawn.
      for (const t of c.keys()) expect(want.has(t)).toBe(true);
      for (const [t, prob] of want) if (draws * prob >= 10) expect(c.has(t)).toBe(true);
      const { chi2, df } = chiSquared(c, want, draws);
      expect(df).toBeGreaterThanOrEqual(3);
      expect(chi2).toBeLessThan(chi2Critical(df));
    }),
  );

  it('keeps a nucleus of hundreds of tokens, and only it', () => {
    const s = setup(4, 1, 3000, 16, 0.5);
    const want = nucleus(s.z[0], 1, 0, 0.5);
    expect(want.size).toBeGreaterThan(500);
    const got = sample(s, new Array(4000).fill(0), Array.from({ length: 4000 }, (_, i) => i), { temperature: 1, topP: 0.5, seed: 7 });
    const order = ranked(s.z[0]);
    const rank = new Map(order.map((t, i) => [t, i]));
    const outside = Array.from(got.tokens).filter((t) => !want.has(t));
    const deepest = Math.max(...Array.from(got.tokens, (t) => rank.get(t)!));
    expect(outside).toEqual([]);
    expect(deepest).toBeGreaterThan(want.size * 0.9);
  });
});
