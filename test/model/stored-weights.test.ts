/**
 * Weights kept compact: a model whose matrices stay in their stored type (GGUF blocks, bf16,
 * f16) must train and sample bit-identically to the same model widened to f32 at load
 * (weights: 'f32'), at a fraction of the memory; random-init matrices take a dtype, rounded
 * as the reference quantizers round (test/helpers/quantize.ts; test/formats/quantize.test.ts
 * checks every block type against llama.cpp's).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { initTensorSources } from '../../lib/model/presets.js';
import { loadModelSpec } from '../../lib/model/tensors.js';
import { native, type EngineConfig, type NativeModel, type TensorSource } from '../../lib/native.js';
import { quantize, type StoredType } from '../helpers/quantize.js';
import { makeTinyModel, tinyBatch, tinyConfig } from '../helpers/tiny-model.js';
import { writeGgufModel } from '../helpers/write-gguf.js';
import { rng } from '../reference/linear.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-stored-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Loss, log-probs, LoRA gradients of one step, and 6 sampled tokens, all as raw bytes. */
async function run(model: NativeModel, vocab: number): Promise<{ bytes: number; out: Buffer[] }> {
  const batch = tinyBatch(vocab);
  const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules: [], seed: 5 });
  const r = rng(11);
  for (const t of adapter.describe().tensors)
    if (t.name.endsWith('lora_B')) await adapter.setTensor(t.name, Float32Array.from({ length: t.shape[0] * t.shape[1] }, () => r() - 0.5));
  const step = await model.step({ ...batch, edgeWeights: new Float32Array(batch.edgeRows.length).fill(0.25) }, adapter, { kind: 'ce' });
  const out = [Buffer.from(Float64Array.of(step.loss).buffer), Buffer.from(step.edgeLogProbs.buffer)];
  for (const t of adapter.describe().tensors) out.push(Buffer.from((await adapter.getTensor(t.name, 'grad')).buffer));
  const session = await model.createSession({ adapter, capacity: 16 });
  await session.append(Int32Array.of(1, 2, 3), Int32Array.of(-1, 0, 1));
  const sampled = await session.sample(Int32Array.of(2, 2), Uint32Array.of(0, 1), { temperature: 1, topK: 0, topP: 1, seed: 3, step: 0 });
  out.push(Buffer.from(sampled.tokens.buffer), Buffer.from(sampled.logProbs.buffer));
  session.dispose();
  adapter.dispose();
  const bytes = model.info().weightBytes;
  model.dispose();
  return { bytes, out };
}

async function both(config: EngineConfig, tensors: TensorSource[]) {
  const stored = await run(await native().createModel({ config, tensors, device: 'cpu', threads: 2 }), config.vocabSize);
  const widened = await run(await native().createModel({ config, tensors, device: 'cpu', threads: 2, weights: 'f32' }), config.vocabSize);
  return { stored, widened };
}

// Whole blocks of 32 in every row (hidden 64, intermediate 96), Q/K permuted in the GGUF.
const shape = { hidden: 64, heads: 4, kvHeads: 2, intermediate: 96, vocab: 40, seed: 9 };

describe('compact weights', () => {
  it.each<[StoredType, number]>([
    ['Q8_0', 0.3],
    ['Q4_1', 0.2],
    ['BF16', 0.55],
  ])('%s GGUF: a step and sampling are bit-identical to widening at load, in %f of the memory', async (type, fraction) => {
    const path = join(dir, `${type}.gguf`);
    await writeGgufModel(path, makeTinyModel(shape), { type });
    const spec = await loadModelSpec(path);
    const { stored, widened } = await both(spec.config, spec.tensors);
    expect(stored.out).toEqual(widened.out);
    expect(stored.bytes).toBeLessThan(fraction * widened.bytes);
  });

  it.each<[StoredType, number]>([
    ['BF16', 0.55],
    ['F16', 0.55],
    ['Q8_0', 0.3],
    ['Q4_0', 0.2],
  ])('random init with dtype %s: stored as the reference quantizer rounds, bit-identical to widening at load', async (dtype, fraction) => {
    const config = tinyConfig(shape);
    const tensors = initTensorSources(config, { seed: 2, std: 0.2, dtype });
    const { stored, widened } = await both(config, tensors);
    expect(stored.out).toEqual(widened.out);
    expect(stored.bytes).toBeLessThan(fraction * widened.bytes);
    // Rounded differently from f32 weights: the same seeds give other log-probs.
    const f32 = await run(await native().createModel({ config, tensors: initTensorSources(config, { seed: 2, std: 0.2 }), device: 'cpu', threads: 2 }), config.vocabSize);
    expect(f32.out[1]).not.toEqual(stored.out[1]);
  });

  // Rows of whole 256-value super-blocks (hidden and q_dim 256, intermediate 512).
  const wide = { hidden: 256, heads: 4, kvHeads: 2, intermediate: 512, vocab: 40, seed: 9, layers: 1 };
  it.each<[StoredType | 'Q5_0' | 'Q5_1' | 'Q4_K' | 'Q5_K' | 'Q6_K', number]>([
    ['Q4_K', 0.16],
    ['Q5_K', 0.19],
    ['Q6_K', 0.23],
    ['Q5_0', 0.19],
    ['Q5_1', 0.2],
  ])('random init with dtype %s: a step and sampling are bit-identical to widening at load, in %f of the memory', async (dtype, fraction) => {
    const config = tinyConfig(wide);
    const tensors = initTensorSources(config, { seed: 2, std: 0.2, dtype });
    const { stored, widened } = await both(config, tensors);
    expect(stored.out).toEqual(widened.out);
    expect(stored.bytes).toBeLessThan(fraction * widened.bytes);
  });

  it('the engine quantizes as the reference quantizers do', () => {
    const r = rng(4);
    const values = Float32Array.from({ length: 32 * 40 }, (_, i) => (i % 97 === 0 ? 0 : (r() - 0.5) * (i % 7 === 0 ? 1e-5 : 3)));
    for (const type of ['F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1'] as const) expect(Buffer.from(native().quantize(type, values))).toEqual(Buffer.from(quantize(type, values)));
  });

  it('names a dtype it cannot store or a bad weights option', async () => {
    const config = tinyConfig(shape);
    expect(() => initTensorSources(config, { dtype: 'q3_k' as never })).toThrow(/unknown weight dtype 'q3_k'.*bf16, q8_0/);
    await expect(native().createModel({ config, tensors: initTensorSources(config, { dtype: 'Q4_K' }), device: 'cpu' })).rejects.toThrow(
      /rows are whole Q4_K blocks can be stored as Q4_K \(its rows hold 64 values, not a multiple of 256\); pick a type with smaller blocks/,
    );
    const withDtype = (dtype: string) =>
      initTensorSources(config).map((t) => ('init' in t && t.init.kind === 'normal' ? { ...t, init: { ...t.init, dtype } } : t)) as TensorSource[];
    await expect(native().createModel({ config, tensors: withDtype('Q3_K'), device: 'cpu' })).rejects.toThrow(/unsupported tensor storage type 'Q3_K'/);
    expect(() => native().createModel({ config, tensors: initTensorSources(config), device: 'cpu', weights: 'f16' as never })).toThrow(/'weights' must be 'stored' or 'f32'/);
  });
});
