/**
 * The core step: exact log-probabilities of a trie batch and exact LoRA gradients of the
 * distribution-matching loss, against the reference algorithm's per-sequence layout (same kernels),
 * a float64 reference model, and central finite differences.
 */
import { native, type EngineConfig, type NativeAdapter, type NativeModel } from '../../lib/native.js';
import { buildSequenceBatch, buildTrieBatch, sequenceLogProbs, type PreparedPrompt } from '../../lib/targets/target-set.js';
import { makeTinyModel, tinyModelSources, type TinyModel, type TinyModelOptions } from '../helpers/tiny-model.js';
import { moduleNames, referenceEdgeLogProbs, referenceLoss, type ReferenceLora, type ReferenceWeights } from '../reference/model.js';
import { relErr } from '../train/tiny-training.js';


function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 4294967296;
  };
}

/** A prompt prepared from token ids directly (no tokenizer needed for the engine's math). */
function prompt(promptTokens: number[], targets: number[][][], weights: number[]): PreparedPrompt {
  const total = weights.reduce((a, b) => a + b, 0);
  const responses = targets[0].map((_, r) => `r${r}`);
  return {
    request: 'test',
    responses,
    targets: targets.map((_, t) => `t${t}`),
    weights: weights.map((w) => w / total),
    promptTokens,
    sequences: targets.flatMap((perResponse, t) =>
      perResponse.map((tokens, r) => ({ target: t, response: r, tokens, weight: weights[t] / total / perResponse.length })),
    ),
  };
}

/** Two prompts: targets sharing prefixes, one with two response prefixes. */
function samplePrompts(vocab: number): PreparedPrompt[] {
  const v = (x: number) => x % vocab;
  return [
    prompt([v(1), v(5), v(9), v(3), v(7)], [[[v(2), v(11), v(4)]], [[v(2), v(12), v(4)]], [[v(2), v(13), v(14), v(4)]], [[v(6), v(4)]]], [1, 2, 3, 4]),
    prompt([v(8), v(3), v(20)], [[[v(2), v(5), v(4)], [v(30), v(2), v(5), v(4)]], [[v(2), v(6), v(4)], [v(30), v(2), v(6), v(4)]]], [1, 1]),
  ];
}

function referenceOf(m: TinyModel): ReferenceWeights {
  return { config: m.config, tensor: (name) => m.weights.get(name)!.data };
}

async function loraOf(adapter: NativeAdapter, config: EngineConfig): Promise<ReferenceLora> {
  const d = adapter.describe();
  const A = new Map<string, Float64Array>(), B = new Map<string, Float64Array>();
  for (const t of d.tensors) {
    const key = `layers.${t.layer}.${t.module}`;
    (t.name.endsWith('lora_A') ? A : B).set(key, Float64Array.from(await adapter.getTensor(t.name)));
  }
  void config;
  return { scale: d.alpha / d.rank, A, B };
}

/** Gives every lora_B random values so gradients reach the lora_A matrices too. */
async function randomiseB(adapter: NativeAdapter, seed: number, scale = 0.3): Promise<void> {
  const r = rng(seed);
  for (const t of adapter.describe().tensors)
    if (t.name.endsWith('lora_B')) await adapter.setTensor(t.name, Float32Array.from({ length: t.shape[0] * t.shape[1] }, () => (r() - 0.5) * scale));
}

async function grads(adapter: NativeAdapter): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const t of adapter.describe().tensors) out.set(t.name, await adapter.getTensor(t.name, 'grad'));
  return out;
}

const shapes: { name: string; options: TinyModelOptions }[] = [
  { name: 'GQA, tied head', options: { seed: 3 } },
  { name: 'untied head, odd sizes, multi-query', options: { seed: 4, hidden: 15, heads: 3, kvHeads: 1, headDim: 6, intermediate: 19, vocab: 37, tied: false } },
  { name: 'q/k/v bias (Qwen2), llama3 rope scaling', options: { seed: 5, bias: true, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16 } } },
];

describe.each(shapes)('the engine on a tiny model ($name)', ({ options }) => {
  let tiny: TinyModel;
  let model: NativeModel;
  beforeAll(async () => {
    tiny = makeTinyModel(options);
    model = await native().createModel({ config: tiny.config, tensors: tinyModelSources(tiny), device: 'cpu' });
  });
  afterAll(() => model.dispose());

  it('computes edge log-probabilities as the float64 reference does', async () => {
    const trie = buildTrieBatch(samplePrompts(tiny.config.vocabSize));
    const { edgeLogProbs } = await model.forward(trie.batch);
    expect(relErr(edgeLogProbs, referenceEdgeLogProbs(referenceOf(tiny), trie.batch))).toBeLessThan(1e-5);
  });

  it('gives the per-sequence reference layout the same target log-probabilities with fewer positions', async () => {
    const prompts = samplePrompts(tiny.config.vocabSize);
    const trie = buildTrieBatch(prompts);
    const perSequence = buildSequenceBatch(prompts);
    const a = sequenceLogProbs(trie, (await model.forward(trie.batch)).edgeLogProbs).flat();
    const b = sequenceLogProbs(perSequence, (await model.forward(perSequence.batch)).edgeLogProbs).flat();
    expect(relErr(a, b)).toBeLessThan(1e-5);
    expect(trie.positions).toBeLessThan(perSequence.positions);
  });

  it('gives the trie and the per-sequence layout the same loss and LoRA gradients', async () => {
    const prompts = samplePrompts(tiny.config.vocabSize);
    const adapter = await model.createAdapter({ rank: 3, alpha: 6, targetModules: [], seed: 11 });
    await randomiseB(adapter, 12);
    const trie = buildTrieBatch(prompts);
    const perSequence = buildSequenceBatch(prompts);
    const lossTrie = (await model.step(trie.batch, adapter, { kind: 'ce' })).loss;
    const gTrie = await grads(adapter);
    await adapter.zeroGrad();
    const lossPadded = (await model.step(perSequence.batch, adapter, { kind: 'ce' })).loss;
    const gPadded = await grads(adapter);
    expect(Math.abs(lossTrie - lossPadded) / Math.abs(lossPadded)).toBeLessThan(1e-5);
    for (const [name, g] of gTrie) expect(relErr(g, gPadded.get(name)!)).toBeLessThan(1e-4);
    adapter.dispose();
  });

  it('keeps the loss and gradients when every layer is recomputed in the backward', async () => {
    const trie = buildTrieBatch(samplePrompts(tiny.config.vocabSize));
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules: ['q_proj', 'v_proj', 'down_proj'], seed: 2 });
    await randomiseB(adapter, 3);
    const kept = await model.step(trie.batch, adapter, { kind: 'ce' });
    const gKept = await grads(adapter);
    await adapter.zeroGrad();
    model.setActivationBudget(0);
    const recomputed = await model.step(trie.batch, adapter, { kind: 'ce' });
    model.setActivationBudget(null);
    expect(recomputed.recomputedLayers).toBe(tiny.config.numLayers);
    expect(recomputed.loss).toBe(kept.loss);
    for (const [name, g] of await grads(adapter)) expect(relErr(g, gKept.get(name)!)).toBeLessThan(1e-6);
    adapter.dispose();
  });

  it('sums the squares of every gradient tensor of the adapter for the norm', async () => {
    const trie = buildTrieBatch(samplePrompts(tiny.config.vocabSize));
    const adapter = await model.createAdapter({ rank: 3, alpha: 6, targetModules: [], seed: 8 });
    await randomiseB(adapter, 9);
    await model.step(trie.batch, adapter, { kind: 'ce' });
    let ref = 0;
    let tensors = 0;
    for (const g of (await grads(adapter)).values()) {
      tensors += 1;
      for (const x of g) ref += x * x;
    }
    expect(tensors).toBe(2 * 7 * tiny.config.numLayers);
    expect(ref).toBeGreaterThan(0);
    expect(Math.abs((await adapter.gradSumSquares()) - ref) / ref).toBeLessThan(1e-12);
    adapter.dispose();
  });

  it('derives the default activation budget from the memory available, and keeps one that is set', () => {
    const GiB = 2 ** 30;
    const budget = native().defaultActivationBudget;
    expect(budget(0)).toBe(0.5 * GiB);
    expect(budget(2 * GiB)).toBe(0.5 * GiB);
    expect(budget(10 * GiB)).toBe(4 * GiB);
    // An H200 with a 13B model loaded: most of the rest, not a fixed 4 GiB.
    expect(budget(113 * GiB)).toBe(55.5 * GiB);
    for (let a = 0; a < 200 * GiB; a += 7.3 * GiB) expect(budget(a + GiB)).toBeGreaterThanOrEqual(budget(a));
    expect(() => budget(-1)).toThrow(/non-negative/);
    const available = model.activationBudget();
    expect(available).toBeGreaterThanOrEqual(0.5 * GiB);
    model.setActivationBudget(123456);
    expect(model.activationBudget()).toBe(123456);
    model.setActivationBudget(null);
    expect(model.activationBudget()).toBeGreaterThanOrEqual(0.5 * GiB);
    expect(() => model.setActivationBudget(-5)).toThrow(/non-negative/);
  });
});

describe('LoRA adapters in the engine', () => {
  let tiny: TinyModel;
  let model: NativeModel;
  beforeAll(async () => {
    tiny = makeTinyModel({ seed: 8, tied: false });
    model = await native().createModel({ config: tiny.config, tensors: tinyModelSources(tiny), device: 'cpu' });
  });
  afterAll(() => model.dispose());

  it('leaves log-probabilities unchanged while B is zero, as PEFT initialises it', async () => {
    const trie = buildTrieBatch(samplePrompts(tiny.config.vocabSize));
    const adapter = await model.createAdapter({ rank: 4, alpha: 8, targetModules: [], seed: 1 });
    const without = (await model.forward(trie.batch)).edgeLogProbs;
    const withFresh = (await model.forward(trie.batch, adapter)).edgeLogProbs;
    expect(Array.from(withFresh)).toEqual(Array.from(without));
    adapter.dispose();
  });

  it('gives the same log-probabilities applied unmerged as merged into the weights', async () => {
    const trie = buildTrieBatch(samplePrompts(tiny.config.vocabSize));
    const adapter = await model.createAdapter({ rank: 3, alpha: 5, targetModules: [], seed: 4 });
    await randomiseB(adapter, 5);
    const unmerged = (await model.forward(trie.batch, adapter)).edgeLogProbs;
    const lora = await loraOf(adapter, tiny.config);
    // W' = W + s·B·A for every adapted layer.
    const merged = new Map(tiny.weights);
    for (const [key, A] of lora.A) {
      const [, layer, mod] = key.split('.');
      const name = `model.layers.${layer}.${['gate_proj', 'up_proj', 'down_proj'].includes(mod) ? 'mlp' : 'self_attn'}.${mod}.weight`;
      const W = tiny.weights.get(name)!;
      const B = lora.B.get(key)!;
      const [out, inF] = W.shape;
      const r = A.length / inF;
      const data = Float32Array.from(W.data);
      for (let o = 0; o < out; o++)
        for (let j = 0; j < inF; j++) {
          let s = 0;
          for (let k = 0; k < r; k++) s += B[o * r + k] * A[k * inF + j];
          data[o * inF + j] += lora.scale * s;
        }
      merged.set(name, { shape: W.shape, data });
    }
    const mergedModel = await native().createModel({ config: tiny.config, tensors: tinyModelSources({ config: tiny.config, weights: merged }), device: 'cpu' });
    const mergedLogProbs = (await mergedModel.forward(trie.batch)).edgeLogProbs;
    expect(relErr(unmerged, mergedLogProbs)).toBeLessThan(1e-5);
    mergedModel.dispose();
    adapter.dispose();
  });

  it('computes LoRA gradients that match central finite differences of the float64 reference', async () => {
    const trie = buildTrieBatch(samplePrompts(tiny.config.vocabSize));
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules: [], seed: 6 });
    await randomiseB(adapter, 7, 0.5);
    await model.step(trie.batch, adapter, { kind: 'ce' });
    const g = await grads(adapter);
    const lora = await loraOf(adapter, tiny.config);
    const ref = referenceOf(tiny);
    const r = rng(99);
    const h = 1e-5;
    const engine: number[] = [], finite: number[] = [];
    for (const t of adapter.describe().tensors) {
      const key = `layers.${t.layer}.${t.module}`;
      const values = (t.name.endsWith('lora_A') ? lora.A : lora.B).get(key)!;
      for (let n = 0; n < 2; n++) {
        const i = Math.floor(r() * values.length);
        const saved = values[i];
        values[i] = saved + h;
        const up = referenceLoss(ref, trie.batch, lora);
        values[i] = saved - h;
        const down = referenceLoss(ref, trie.batch, lora);
        values[i] = saved;
        finite.push((up - down) / (2 * h));
        engine.push(g.get(t.name)![i]);
      }
    }
    expect(moduleNames.length).toBe(7);
    expect(relErr(engine, finite)).toBeLessThan(1e-3);
    adapter.dispose();
  });
});
