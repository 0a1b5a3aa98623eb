/**
 * Shared pieces of the training tests: a tiny random model behind the real Model class,
 * prompts made from token ids (no tokenizer needed), and comparisons.
 */
import type { Adapter } from '../../lib/model/adapter.js';
import { Model } from '../../lib/model/model.js';
import { native } from '../../lib/native.js';
import type { PreparedPrompt } from '../../lib/targets/target-set.js';
import { makeTinyModel, tinyModelSources, type TinyModel, type TinyModelOptions } from '../helpers/tiny-model.js';

export async function tinyTrainingModel(options: TinyModelOptions = {}): Promise<{ tiny: TinyModel; model: Model }> {
  const tiny = makeTinyModel(options);
  const engine = await native().createModel({ config: tiny.config, tensors: tinyModelSources(tiny), device: 'cpu' });
  return { tiny, model: new Model('tiny', tiny.config, engine, undefined) };
}

/** A prompt prepared from token ids: targets[t][r] is target t's tokens after response r. */
export function promptOf(promptTokens: number[], targets: number[][][], weights: number[], request = 'test'): PreparedPrompt {
  const total = weights.reduce((a, b) => a + b, 0);
  return {
    request,
    responses: targets[0].map((_, r) => `r${r}`),
    targets: targets.map((_, t) => `t${t}`),
    weights: weights.map((w) => w / total),
    promptTokens,
    sequences: targets.flatMap((perResponse, t) =>
      perResponse.map((tokens, r) => ({ target: t, response: r, tokens, weight: weights[t] / total / perResponse.length })),
    ),
  };
}

/** Three prompts with shared target prefixes, uneven weights, one with two responses. */
export function samplePrompts(vocab: number): PreparedPrompt[] {
  const v = (x: number) => x % vocab;
  return [
    promptOf([v(1), v(5), v(9), v(3), v(7)], [[[v(2), v(11), v(4)]], [[v(2), v(12), v(4)]], [[v(2), v(13), v(14), v(4)]], [[v(6), v(4)]]], [1, 2, 3, 4], 'a'),
    promptOf([v(8), v(3), v(20)], [[[v(2), v(5), v(4)], [v(30), v(2), v(5), v(4)]], [[v(2), v(6), v(4)], [v(30), v(2), v(6), v(4)]]], [1, 1], 'b'),
    promptOf([v(17), v(9)], [[[v(21), v(4)]], [[v(22), v(4)]], [[v(23), v(24), v(4)]]], [3, 1, 1], 'c'),
  ];
}

export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i]) || !Number.isFinite(b[i])) return Infinity;
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 4294967296;
  };
}

/** Gives every lora_B random values, so the first gradients reach the lora_A matrices too. */
export async function randomiseB(adapter: Adapter, seed: number, scale = 0.3): Promise<void> {
  const r = lcg(seed);
  for (const t of adapter.tensors())
    if (t.name.endsWith('lora_B')) await adapter.setTensor(t.name, Float32Array.from({ length: t.shape[0] * t.shape[1] }, () => (r() - 0.5) * scale));
}

/** One tensor part of every adapter matrix, by engine name. */
export async function tensorsOf(adapter: Adapter, part: 'param' | 'grad' | 'm' | 'v' = 'param'): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const t of adapter.tensors()) out.set(t.name, await adapter.getTensor(t.name, part));
  return out;
}
