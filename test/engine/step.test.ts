/**
 * The core step: exact log-probabilities of a trie batch and exact LoRA gradients of the
 * distribution-matching loss, against the reference algorithm's per-sequence layout (same kernels),
 * a float64 reference model, and central finite differences.
 */
import { native, type EngineConfig, type NativeAdapter, type NativeModel } from '../../lib/native.js';
import { buildSequenceBatch, buildTrieBatch, sequenceLogProbs, type PreparedPrompt } from '../../lib/targets/target-set.js';
import { makeTinyModel, tinyConfig, tinyModelSources, type TinyModel, type TinyModelOptions } from '../helpers/tiny-model.js';
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

/** The trie as Model.trieBatch lays it out: a LongRoPE model's straddling prompts split by side. */
function trieFor(c: EngineConfig, prompts: PreparedPrompt[]) {
  return buildTrieBatch(prompts, c.ropeScaling?.type === 'longrope' ? { ropeSplit: c.ropeScaling.originalMaxPositionEmbeddings } : {});
}

function referenceOf(m: TinyModel): ReferenceWeights {
  return { config: m.config, tensor: (name) => m.weights.get(name)!.data };
}

async function loraOf(adapter: NativeAdapter, config: EngineConfig): Promise<ReferenceLora> {
  const d = adapter.describe();
  const A = new Map<string, Float64Array>(), B = new Map<string, Float64Array>();
  for (const t of d.tensors) {
    const key = `layers.${t.layer}.${t.module}`;
    const values = Float64Array.from(await adapter.getTensor(t.name));
    (t.name.endsWith('lora_A') ? A : B).set(key, values);
    // A fused module (Phi-3) is one LoRA over its parts: A shared, B split by rows. The parts
    // are views, so perturbing the fused matrices moves them all.
    const parts = fusedParts(t.module, config);
    for (const [part, row, rows] of parts)
      if (t.name.endsWith('lora_A')) A.set(`layers.${t.layer}.${part}`, values);
      else B.set(`layers.${t.layer}.${part}`, values.subarray(row * d.rank, (row + rows) * d.rank));
  }
  return { scale: d.alpha / d.rank, A, B };
}

/** The parts [module, first row, rows] of a fused LoRA module, or none. */
function fusedParts(module: string, c: EngineConfig): [string, number, number][] {
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, I = c.intermediateSize;
  if (module === 'qkv_proj') return [['q_proj', 0, q], ['k_proj', q, kv], ['v_proj', q + kv, kv]];
  if (module === 'gate_up_proj') return [['gate_proj', 0, I], ['up_proj', I, I]];
  return [];
}
const modulesPerLayer = (c: EngineConfig) => (c.fusedProjections ? 4 : 7);

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

/**
 * LoRA gradients of the engine's step against central finite differences of the float64
 * reference loss, two random entries of every adapter matrix.
 */
async function expectFiniteDifferenceGradients(tiny: TinyModel, model: NativeModel, seed: number): Promise<void> {
  const trie = trieFor(tiny.config, samplePrompts(tiny.config.vocabSize));
  const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules: [], seed });
  await randomiseB(adapter, seed + 1, 0.5);
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
  expect(engine.length).toBe(2 * 2 * modulesPerLayer(tiny.config) * tiny.config.numLayers);
  expect(relErr(engine, finite)).toBeLessThan(1e-3);
  adapter.dispose();
}

const gemmaScale = Math.fround(Math.sqrt(32));
const shapes: { name: string; options: TinyModelOptions; finiteDifferences?: boolean }[] = [
  { name: 'GQA, tied head', options: { seed: 3 } },
  { name: 'untied head, odd sizes, multi-query', options: { seed: 4, hidden: 15, heads: 3, kvHeads: 1, headDim: 6, intermediate: 19, vocab: 37, tied: false } },
  { name: 'q/k/v bias (Qwen2), llama3 rope scaling', options: { seed: 5, bias: true, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16 } } },
  // Windows of 3 and 4 positions against prompts of 3–5 tokens and targets of 2–4: the window
  // cuts into the prompt for most trie rows.
  { name: 'sliding window 3 on every layer (Mistral)', options: { seed: 13, family: { slidingWindow: 3 } }, finiteDifferences: true },
  {
    name: 'Gemma: GeGLU, √d embedding scale, (1 + w) norms, head_dim apart from hidden/heads',
    options: { seed: 14, tied: true, headDim: 12, family: { activation: 'gelu_tanh', embeddingScale: gemmaScale, normWeightOffset: 1 } },
    finiteDifferences: true,
  },
  {
    name: 'Gemma 2: attention and final soft-caps, alternating window, sandwich norms, query_pre_attn_scalar',
    options: {
      seed: 15,
      tied: true,
      family: {
        activation: 'gelu_tanh', embeddingScale: gemmaScale, normWeightOffset: 1, sandwichNorms: true, attentionScale: 1 / Math.sqrt(5),
        attnLogitSoftcap: 1.5, finalLogitSoftcap: 2.5, slidingWindow: 3, layerTypes: ['sliding_attention', 'full_attention'],
      },
    },
    finiteDifferences: true,
  },
  {
    name: 'Gemma 3 / Qwen3: q/k norms, local RoPE base on windowed layers',
    options: {
      seed: 16,
      headDim: 16,
      family: { qkNorm: true, sandwichNorms: true, activation: 'gelu_tanh', slidingWindow: 4, layerTypes: ['full_attention', 'sliding_attention'], ropeTheta: 1e6, localRopeTheta: 10 },
    },
    finiteDifferences: true,
  },
  // Phi-3: one LoRA over the fused q/k/v and one over gate/up (A shared, B split by rows).
  { name: 'Phi-3: LoRA on fused qkv_proj and gate_up_proj, window 4', options: { seed: 17, family: { fusedProjections: true, slidingWindow: 4 } }, finiteDifferences: true },
  // Phi-4-mini: LongRoPE on the first 3/4 of each head. Every sequence (7 to 9 positions) passes
  // the original context 5, so the long factors apply; the session test's first append (5 rows,
  // positions 0-4) starts on the short ones and must recompute its cache when the rest crosses.
  {
    name: 'Phi-4-mini: LongRoPE past the original context (long factors, attention factor) on 12 of 16 dims per head, fused LoRA',
    options: {
      seed: 18,
      headDim: 16,
      family: {
        fusedProjections: true,
        rotaryDim: 12,
        ropeScaling: { type: 'longrope', shortFactor: [1, 1.2, 1.5, 2, 3, 5], longFactor: [1.1, 2, 4, 9, 20, 40], originalMaxPositionEmbeddings: 5, attentionFactor: 1.19 },
      },
    },
    finiteDifferences: true,
  },
  // Phi-3.5-mini: LongRoPE with the original context 7 inside the first prompt's sequences
  // (7, 8, 8 and 9 positions): its trie splits into a short and a long segment, and the trie
  // must still match the per-sequence layout (each sequence its own choice) and the reference.
  {
    name: 'Phi-3.5-mini: LongRoPE straddled by a prompt\'s sequences (short and long factors), window 4',
    options: {
      seed: 19,
      family: {
        fusedProjections: true,
        slidingWindow: 4,
        ropeScaling: { type: 'longrope', shortFactor: [1, 3, 7, 20], longFactor: [2, 4, 8, 16], originalMaxPositionEmbeddings: 7, attentionFactor: 1.3 },
      },
    },
    finiteDifferences: false,
  },
];

describe.each(shapes)('the engine on a tiny model ($name)', ({ options, finiteDifferences }) => {
  let tiny: TinyModel;
  let model: NativeModel;
  beforeAll(async () => {
    tiny = makeTinyModel(options);
    model = await native().createModel({ config: tiny.config, tensors: tinyModelSources(tiny), device: 'cpu' });
  });
  afterAll(() => model.dispose());

  it('computes edge log-probabilities as the float64 reference does', async () => {
    const trie = trieFor(tiny.config, samplePrompts(tiny.config.vocabSize));
    const { edgeLogProbs } = await model.forward(trie.batch);
    expect(relErr(edgeLogProbs, referenceEdgeLogProbs(referenceOf(tiny), trie.batch))).toBeLessThan(1e-5);
  });

  it('gives the per-sequence reference layout the same target log-probabilities with fewer positions', async () => {
    const prompts = samplePrompts(tiny.config.vocabSize);
    const trie = trieFor(tiny.config, prompts);
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
    const trie = trieFor(tiny.config, prompts);
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
    const trie = trieFor(tiny.config, samplePrompts(tiny.config.vocabSize));
    const targetModules = tiny.config.fusedProjections ? ['qkv_proj' as const, 'down_proj' as const] : ['q_proj' as const, 'v_proj' as const, 'down_proj' as const];
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules, seed: 2 });
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
    const trie = trieFor(tiny.config, samplePrompts(tiny.config.vocabSize));
    const adapter = await model.createAdapter({ rank: 3, alpha: 6, targetModules: [], seed: 8 });
    await randomiseB(adapter, 9);
    await model.step(trie.batch, adapter, { kind: 'ce' });
    let ref = 0;
    let tensors = 0;
    for (const g of (await grads(adapter)).values()) {
      tensors += 1;
      for (const x of g) ref += x * x;
    }
    expect(tensors).toBe(2 * modulesPerLayer(tiny.config) * tiny.config.numLayers);
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

  if (options.family)
    it('is changed by its family switches (so the comparisons above test them)', async () => {
      const trie = trieFor(tiny.config, samplePrompts(tiny.config.vocabSize));
      const { edgeLogProbs } = await model.forward(trie.batch);
      const llama = { ...tinyConfig({ ...options, family: undefined }) };
      expect(relErr(edgeLogProbs, referenceEdgeLogProbs({ ...referenceOf(tiny), config: llama }, trie.batch))).toBeGreaterThan(1e-3);
    });

  it('samples from a KV-cached session with the log-probabilities of the forward pass', async () => {
    const { batch } = trieFor(tiny.config, samplePrompts(tiny.config.vocabSize));
    const session = await model.createSession({ capacity: 4 });
    await session.append(batch.tokens.subarray(0, 5), batch.parents.subarray(0, 5));
    await session.append(batch.tokens.subarray(5), batch.parents.subarray(5));
    const rows = Int32Array.from(new Set(batch.edgeRows));
    const drawn = await session.sample(rows, Uint32Array.from(rows, (_, i) => i), { temperature: 1, topK: 0, topP: 1, seed: 5, step: 0 });
    session.dispose();
    const { edgeLogProbs } = await model.forward({ ...batch, edgeRows: rows, edgeTokens: drawn.tokens, edgeWeights: undefined });
    // Absolute nats: Gemma's scaled, tied embeddings make some rows near-certain (log p ~ -1e-9).
    const worst = Math.max(...Array.from(drawn.logProbs, (lp, i) => Math.abs(lp - edgeLogProbs[i])));
    expect(worst).toBeLessThan(1e-5);
  });

  if (finiteDifferences)
    it('computes LoRA gradients through its family ops that match central finite differences', async () => {
      await expectFiniteDifferenceGradients(tiny, model, 21);
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
    expect(moduleNames.length).toBe(7);
    await expectFiniteDifferenceGradients(tiny, model, 6);
  });
});
