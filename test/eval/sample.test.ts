/**
 * The KV-cached sampler on a tiny random model: sampled frequencies against the exact
 * distribution from the trie forward (χ² goodness of fit at a fixed seed), sample log-probs
 * against the forward's, reproducibility across batch sizes, and the stop / length rules.
 *
 * The outcome space is small and complete: with stop token 0 and maxTokens 2, a sample is
 * [0] (stops at once), [v, 0] (stops after one token) or [v, w] (cut at the length), for v, w
 * in 1…V−1. Every probability comes from one forward over the prompt and all V² two-token
 * continuations, with the sampler's temperature / top-k / top-p applied to each step's
 * log-probabilities exactly as the engine applies them to logits.
 */
import { sampleTokens, type SampleOptions, type TokenSample } from '../../lib/eval/sample.js';
import { Model } from '../../lib/model/model.js';
import { native, type NativeBatch } from '../../lib/native.js';
import { makeTinyModel, tinyModelSources } from '../helpers/tiny-model.js';
import { chiSquareSurvival, chiSquareTest } from './chi-square.js';

const V = 6;
const STOP = 0;
const PROMPT = [3, 1, 4, 1, 5, 2];

let model: Model;
/** logp1[v] = log p(v | prompt); logp2[v][w] = log p(w | prompt, v). */
let logp1: number[];
let logp2: number[][];

beforeAll(async () => {
  const tiny = makeTinyModel({ vocab: V, seed: 11 });
  const engine = await native().createModel({ config: tiny.config, tensors: tinyModelSources(tiny), device: 'cpu' });
  model = new Model('tiny', tiny.config, engine, undefined);
  const P = PROMPT.length;
  const batch: NativeBatch = {
    tokens: Int32Array.from([...PROMPT, ...Array.from({ length: V }, (_, v) => v)]),
    parents: Int32Array.from([...PROMPT.map((_, i) => i - 1), ...new Array(V).fill(P - 1)]),
    edgeRows: Int32Array.from([...new Array(V).fill(P - 1), ...Array.from({ length: V * V }, (_, e) => P + Math.floor(e / V))]),
    edgeTokens: Int32Array.from([...Array.from({ length: V }, (_, v) => v), ...Array.from({ length: V * V }, (_, e) => e % V)]),
  };
  const { edgeLogProbs } = await engine.forward(batch);
  logp1 = Array.from(edgeLogProbs.subarray(0, V));
  logp2 = Array.from({ length: V }, (_, v) => Array.from(edgeLogProbs.subarray(V + v * V, V + (v + 1) * V)));
});

afterAll(() => model.dispose());

/** The engine's filters on one step's log-probabilities (logits up to a constant). */
function filtered(logp: number[], o: { temperature: number; topK: number; topP: number }): number[] {
  const order = logp.map((_, i) => i).sort((a, b) => logp[b] - logp[a] || a - b);
  const k = o.topK > 0 ? Math.min(o.topK, logp.length) : logp.length;
  const zmax = logp[order[0]];
  const w = order.slice(0, k).map((i) => Math.exp((logp[i] - zmax) / o.temperature));
  const total = w.reduce((a, b) => a + b, 0);
  let keep = k;
  if (o.topP < 1) {
    let acc = 0;
    for (let i = 0; i < k; i++) {
      acc += w[i] / total;
      if (acc >= o.topP) {
        keep = i + 1;
        break;
      }
    }
  }
  const kept = w.slice(0, keep).reduce((a, b) => a + b, 0);
  const p = new Array<number>(logp.length).fill(0);
  for (let i = 0; i < keep; i++) p[order[i]] = w[i] / kept;
  return p;
}

/** Every outcome's key and exact probability under the given filters. */
function outcomes(o: { temperature: number; topK: number; topP: number }): Map<string, number> {
  const q1 = filtered(logp1, o);
  const out = new Map<string, number>([[key({ tokens: [], finishReason: 'stop' }), q1[STOP]]]);
  for (let v = 1; v < V; v++) {
    const q2 = filtered(logp2[v], o);
    out.set(key({ tokens: [v], finishReason: 'stop' }), q1[v] * q2[STOP]);
    for (let w = 1; w < V; w++) out.set(key({ tokens: [v, w], finishReason: 'length' }), q1[v] * q2[w]);
  }
  return out;
}

function key(s: Pick<TokenSample, 'tokens' | 'finishReason'>): string {
  return `${s.tokens.join(',')}|${s.finishReason}`;
}

async function draw(options: Partial<SampleOptions> & { n: number }): Promise<TokenSample[]> {
  return (await sampleTokens(model, PROMPT, [STOP], { maxTokens: 2, ...options })).samples;
}

function fit(samples: TokenSample[], exact: Map<string, number>) {
  const counts = new Map<string, number>();
  for (const s of samples) {
    const k = key(s);
    expect(exact.has(k)).toBe(true);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  const keys = [...exact.keys()];
  return chiSquareTest(
    keys.map((k) => counts.get(k) ?? 0),
    keys.map((k) => exact.get(k)!),
  );
}

describe('the χ² helper', () => {
  it('gives the textbook tail probabilities', () => {
    expect(chiSquareSurvival(3.841458820694124, 1)).toBeCloseTo(0.05, 10);
    expect(chiSquareSurvival(18.307038053275146, 10)).toBeCloseTo(0.05, 10);
    expect(chiSquareSurvival(1, 2)).toBeCloseTo(Math.exp(-0.5), 12);
    expect(chiSquareSurvival(150, 100)).toBeCloseTo(0.000904, 5);
  });
});

describe('sampleTokens on a tiny model', () => {
  const N = 4000;

  it('draws sequences with the exact probabilities of the trie forward (χ², temperature 1)', async () => {
    const samples = await draw({ n: N, seed: 7 });
    expect(samples).toHaveLength(N);
    const exact = outcomes({ temperature: 1, topK: 0, topP: 1 });
    expect([...exact.values()].reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    const good = fit(samples, exact);
    expect(good.cells).toBeGreaterThan(10);
    expect(good.pValue).toBeGreaterThan(0.01);
    // The same samples against the distribution at another temperature: the test has power.
    expect(fit(samples, outcomes({ temperature: 0.6, topK: 0, topP: 1 })).pValue).toBeLessThan(1e-6);
  });

  it('applies temperature, top-k and top-p as the filtered distribution says (χ²)', async () => {
    const o = { temperature: 0.8, topK: 4, topP: 0.9 };
    const samples = await draw({ n: N, seed: 8, ...o });
    const exact = outcomes(o);
    // Filtered-out continuations never appear.
    for (const s of samples) expect(exact.get(key(s))).toBeGreaterThan(0);
    expect(fit(samples, exact).pValue).toBeGreaterThan(0.01);
    expect(fit(samples, outcomes({ temperature: 1, topK: 0, topP: 1 })).pValue).toBeLessThan(1e-6);
  });

  it("reports each sample's log-probability as the trie forward computes it", async () => {
    const samples = await draw({ n: 64, seed: 3 });
    const ours = samples.map((s) => s.logProb);
    const reference = samples.map((s) =>
      s.tokens.length === 0 ? logp1[STOP] : logp1[s.tokens[0]] + (s.finishReason === 'stop' ? logp2[s.tokens[0]][STOP] : logp2[s.tokens[0]][s.tokens[1]]),
    );
    let num = 0, den = 0;
    ours.forEach((x, i) => {
      expect(Number.isFinite(x)).toBe(true);
      num += (x - reference[i]) ** 2;
      den += reference[i] ** 2;
    });
    expect(Math.sqrt(num / den)).toBeLessThan(1e-5);
  });

  it('gives the same samples for the same seed whatever the batch size, and others for another seed', async () => {
    const a = await draw({ n: 40, seed: 5, maxTokens: 6 });
    const b = await draw({ n: 40, seed: 5, maxTokens: 6, batchSize: 7 });
    const c = await draw({ n: 40, seed: 6, maxTokens: 6 });
    expect(b.map(key)).toEqual(a.map(key));
    expect(c.map(key)).not.toEqual(a.map(key));
  });

  it('stops at a stop token (left out of the tokens) or at maxTokens', async () => {
    const samples = await draw({ n: 200, seed: 9, maxTokens: 5 });
    for (const s of samples) {
      expect(s.tokens).not.toContain(STOP);
      if (s.finishReason === 'length') expect(s.tokens).toHaveLength(5);
      else expect(s.tokens.length).toBeLessThan(5);
    }
    expect(new Set(samples.map((s) => s.finishReason))).toEqual(new Set(['stop', 'length']));
  });

  it('rejects settings the engine cannot honour, saying which', async () => {
    await expect(draw({ n: 2, topP: 0 })).rejects.toThrow(/topP/);
    await expect(draw({ n: 0 })).rejects.toThrow(/number of samples/);
    await expect(draw({ n: 2, temperature: -1 })).rejects.toThrow(/temperature/);
    await expect(draw({ n: 2, seed: 1.5 })).rejects.toThrow(/seed/);
  });
});
