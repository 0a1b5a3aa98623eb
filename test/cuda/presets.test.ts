/**
 * Model presets and seeded random weights. Runs everywhere: the parameter counts are the
 * published ones, and a small config's random weights make a working, reproducible model.
 */
import { initTensorSources, parameterCount, preset, presets } from '../../lib/model/presets.js';
import { native, type EngineConfig, type NativeBatch } from '../../lib/native.js';

describe('model presets', () => {
  it.each([
    ['llama-2-7b', 6_738_415_616],
    ['llama-2-13b', 13_015_864_320],
    ['mistral-7b', 7_241_732_096],
    ['smollm2-135m', 134_515_008],
    ['llama-3.1-8b', 8_030_261_248],
    ['qwen2.5-7b', 7_615_616_512],
    ['gemma-7b', 8_537_680_896],
    ['gemma-2-9b', 9_241_705_984],
  ])('%s has the published parameter count', (name, count) => {
    expect(parameterCount(preset(name))).toBe(count);
  });

  it('names every tensor once, with a source for each', () => {
    const sources = initTensorSources(presets['mistral-7b'], { seed: 1 });
    const names = new Set(sources.map((s) => s.name));
    expect(names.size).toBe(sources.length);
    expect(names.has('model.layers.31.self_attn.k_proj.weight')).toBe(true);
    expect(sources.find((s) => s.name === 'model.layers.0.self_attn.k_proj.weight')?.shape).toEqual([1024, 4096]);
    expect(names.has('lm_head.weight')).toBe(true);
    expect(initTensorSources(presets['smollm2-135m']).some((s) => s.name === 'lm_head.weight')).toBe(false);
  });

  it('rejects unknown presets and bad options with typed errors', () => {
    expect(() => preset('llama-9')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('llama-2-7b') }));
    expect(() => initTensorSources(presets['llama-2-7b'], { std: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('makes a reproducible random model that the seed changes', async () => {
    const config: EngineConfig = { ...presets['smollm2-135m'], hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, vocabSize: 128 };
    const batch: NativeBatch = {
      tokens: Int32Array.from([3, 7, 11, 13]),
      parents: Int32Array.from([-1, 0, 1, 2]),
      edgeRows: Int32Array.from([1, 2, 3]),
      edgeTokens: Int32Array.from([11, 13, 17]),
    };
    const logp = async (seed: number) => {
      const model = await native().createModel({ config, tensors: initTensorSources(config, { seed, std: 0.2 }), device: 'cpu' });
      const out = (await model.forward(batch)).edgeLogProbs;
      model.dispose();
      return Array.from(out);
    };
    const a = await logp(1);
    expect(a.every((x) => Number.isFinite(x) && x < 0)).toBe(true);
    expect(await logp(1)).toEqual(a);
    expect(await logp(2)).not.toEqual(a);
  });
});
