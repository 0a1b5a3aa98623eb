import { loadModel, pickDevice } from '../../lib/model/load.js';
import { preset } from '../../lib/model/presets.js';
import { native } from '../../lib/native.js';

describe('loadModel', () => {
  it('makes random weights of a preset shape, with no tokenizer, on the chosen device', async () => {
    const model = await loadModel({ config: 'smollm2-135m', randomInit: true, seed: 3 }, { device: 'cpu' });
    expect(model.spec).toBe('random:smollm2-135m');
    expect(model.device).toBe('cpu');
    expect(model.config.numLayers).toBe(30);
    expect(() => model.tokenizer).toThrow(/no tokenizer/);
    const prompts = [{ request: 'r', responses: [''], targets: ['a', 'b'], weights: [0.5, 0.5], promptTokens: [1, 2, 3], sequences: [{ target: 0, response: 0, tokens: [4, 2], weight: 0.5 }, { target: 1, response: 0, tokens: [5, 2], weight: 0.5 }] }];
    const adapter = await model.createAdapter();
    const out = await model.step(prompts, adapter);
    expect(Number.isFinite(out.loss)).toBe(true);
    expect(out.positions).toBe(5);
    adapter.dispose();
    model.dispose();
  });

  it('sizes the CPU thread pool as each model asks, all cores when it does not say', async () => {
    const small = { config: { ...preset('smollm2-135m'), numLayers: 1, vocabSize: 64 }, randomInit: true as const, seed: 1 };
    const allCores = native().threadCount();
    const one = await loadModel(small, { device: 'cpu', threads: 1 });
    expect(native().threadCount()).toBe(1);
    const byDefault = await loadModel(small, { device: 'cpu' });
    expect(native().threadCount()).toBe(allCores);
    one.dispose();
    byDefault.dispose();
  });

  it('takes the GPU for device auto only when there is one', () => {
    expect(pickDevice('auto')).toBe(native().cudaStatus().available ? 'cuda' : 'cpu');
    expect(pickDevice('cpu')).toBe('cpu');
  });

  const gpu = native().cudaStatus().available;
  (gpu ? it.skip : it)(`refuses device cuda without a GPU, saying why${gpu ? ' (skipped: this machine has a GPU)' : ''}`, async () => {
    await expect(loadModel({ config: 'smollm2-135m', randomInit: true }, { device: 'cuda' })).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/cuda.*not available/) });
  });

  it('names an unknown preset and lists the known ones', async () => {
    await expect(loadModel({ config: 'llama-9', randomInit: true })).rejects.toThrow(/unknown model preset 'llama-9'.*llama-2-13b/);
  });
});
