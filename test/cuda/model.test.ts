/**
 * The whole graph on the GPU against the CPU, from the same seeded random weights (made on
 * each device by initTensorSources): forward log-probabilities, a training step's loss and
 * LoRA gradients, and a few AdamW steps.
 */
import { initTensorSources } from '../../lib/model/presets.js';
import { native, type EngineConfig, type NativeAdapter, type NativeBatch, type NativeModel } from '../../lib/native.js';
import { describeCuda, normals, relError, rng } from './helpers.js';

const config: EngineConfig = {
  hiddenSize: 64,
  intermediateSize: 160,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  vocabSize: 256,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  tieWordEmbeddings: false,
  attentionBias: false,
};

// A 9-token prompt (rows 0-8) and the trie of four answers, each ending in EOS (2):
// [40 41], [40 44], [45], [46 47 48]. Internal nodes get rows 9-15 depth-first; every node
// gets an edge from its parent's row, weighted by the answers through it (1/4 each).
const batch: NativeBatch = {
  tokens: Int32Array.from([5, 9, 13, 17, 21, 25, 29, 33, 37, 40, 41, 44, 45, 46, 47, 48]),
  parents: Int32Array.from([-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 8, 8, 13, 14]),
  edgeRows: Int32Array.from([8, 9, 10, 9, 11, 8, 12, 8, 13, 14, 15]),
  edgeTokens: Int32Array.from([40, 41, 2, 44, 2, 45, 2, 46, 47, 48, 2]),
  edgeWeights: Float32Array.from([0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]),
};

const modules = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const fusedModules = ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'];

async function grads(adapter: NativeAdapter): Promise<number[]> {
  const out: number[] = [];
  for (const t of adapter.describe().tensors) out.push(...(await adapter.getTensor(t.name, 'grad')));
  return out;
}

// The family switches at once: Gemma 2's soft-caps, sandwich norms and alternating window,
// Gemma 3's q/k norms and local RoPE base, GeGLU and the embedding scale.
const families: EngineConfig = {
  ...config,
  activation: 'gelu_tanh',
  embeddingScale: 8,
  sandwichNorms: true,
  qkNorm: true,
  attentionScale: 0.3,
  attnLogitSoftcap: 2,
  finalLogitSoftcap: 5,
  slidingWindow: 4,
  layerTypes: ['sliding_attention', 'full_attention'],
  localRopeTheta: 100,
};

// Phi-4-mini: fused q/k/v and gate/up (LoRA on the fused layers), LongRoPE's long factors (the
// trie is 12 deep, the original context 8) with its attention factor, 12 of 16 dims rotated.
const phi4: EngineConfig = {
  ...config,
  fusedProjections: true,
  rotaryDim: 12,
  ropeScaling: { type: 'longrope', shortFactor: [1, 1.2, 1.5, 2, 3, 5], longFactor: [1.1, 2, 4, 9, 20, 40], originalMaxPositionEmbeddings: 8, attentionFactor: 1.19 },
};

for (const [name, cfg] of [['Llama', config], ['every family switch', families], ['Phi-4-mini: fused, LongRoPE, partial rotary', phi4]] as const)
describeCuda(`a model on CUDA matches the same model on the CPU (${name})`, () => {
  const config = cfg;
  const models: NativeModel[] = [];
  const adapters: NativeAdapter[] = [];

  beforeAll(async () => {
    const tensors = initTensorSources(config, { seed: 3, std: 0.1 });
    for (const device of ['cpu', 'cuda']) {
      const model = await native().createModel({ config, tensors, device });
      const adapter = await model.createAdapter({ rank: 4, alpha: 8, targetModules: config.fusedProjections ? fusedModules : modules, seed: 5 });
      models.push(model);
      adapters.push(adapter);
    }
    // B starts at zero; the same random B on both makes the LoRA path carry signal.
    const next = rng(8);
    for (const t of adapters[0].describe().tensors) {
      if (!t.name.endsWith('lora_B')) continue;
      const b = normals(next, t.shape[0] * t.shape[1], 0.05);
      for (const a of adapters) await a.setTensor(t.name, b);
    }
  });

  afterAll(() => {
    for (const a of adapters) a.dispose();
    for (const m of models) m.dispose();
  });

  it('runs on the GPU', () => {
    expect(models[1].info().device).toMatch(/^cuda:/);
  });

  it('gives the same forward log-probabilities', async () => {
    const [c, g] = await Promise.all(models.map((m, i) => m.forward(batch, adapters[i])));
    expect(relError(g.edgeLogProbs, c.edgeLogProbs)).toBeLessThan(1e-2);
  });

  it('gives the same step loss and LoRA gradients', async () => {
    for (const a of adapters) await a.zeroGrad();
    const c = await models[0].step(batch, adapters[0], { kind: 'ce' });
    const g = await models[1].step(batch, adapters[1], { kind: 'ce' });
    expect(Math.abs(g.loss - c.loss) / Math.abs(c.loss)).toBeLessThan(1e-2);
    // Two layers of bf16 activations between the loss and the gradients: 5e-2.
    expect(relError(await grads(adapters[1]), await grads(adapters[0]))).toBeLessThan(5e-2);
  });

  it('follows the same loss curve over 5 AdamW steps', async () => {
    const curves: number[][] = [[], []];
    for (let step = 1; step <= 5; step++) {
      for (let i = 0; i < 2; i++) {
        await adapters[i].zeroGrad();
        curves[i].push((await models[i].step(batch, adapters[i], { kind: 'ce' })).loss);
        const norm = Math.sqrt(await adapters[i].gradSumSquares());
        await adapters[i].adamwStep({ lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-5, weightDecay: 0.01, step, gradScale: norm > 1 ? 1 / norm : 1 });
      }
    }
    expect(relError(curves[1], curves[0])).toBeLessThan(2e-2);
    expect(curves[1][4]).toBeLessThan(curves[1][0]);
  });
});
