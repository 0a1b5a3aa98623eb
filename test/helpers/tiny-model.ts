/**
 * A random tiny Llama-family model for tests: its EngineConfig and every weight under its
 * Hugging Face name, seeded and deterministic. Feed it to the engine directly
 * (`tinyModelSources`), or write it out with write-safetensors.ts / write-gguf.ts and load it
 * back through the real loaders.
 *
 *   const model = makeTinyModel({ kvHeads: 1, tied: true, seed: 7 });
 *   const engine = await native().createModel({ config: model.config, tensors: tinyModelSources(model), device: 'cpu' });
 *   const { edgeLogProbs } = await engine.forward(tinyBatch(model.config.vocabSize));
 */
import type { EngineConfig, NativeBatch, TensorSource } from '../../lib/native.js';
import { expectedTensors } from '../../lib/model/tensors.js';
import { rng } from '../reference/linear.js';

export interface TinyModelOptions {
  layers?: number;
  hidden?: number;
  heads?: number;
  /** Key/value heads (GQA when fewer than heads). */
  kvHeads?: number;
  /** Default hidden / heads. */
  headDim?: number;
  intermediate?: number;
  vocab?: number;
  /** LM head tied to the embedding (no lm_head.weight). */
  tied?: boolean;
  /** q/k/v biases, as Qwen2 has. */
  bias?: boolean;
  ropeTheta?: number;
  rmsNormEps?: number;
  ropeScaling?: EngineConfig['ropeScaling'];
  /** Family switches (activation, soft-caps, window, q/k norm, …) laid over the Llama shape. */
  family?: Partial<EngineConfig>;
  seed?: number;
}

export interface TinyTensor {
  /** Outermost first ([out, in] for a linear weight). */
  shape: number[];
  data: Float32Array;
}

export interface TinyModel {
  config: EngineConfig;
  /** Every weight the engine loads, by Hugging Face name, in expectedTensors order. */
  weights: Map<string, TinyTensor>;
}

/** A seeded generator of uniform [0, 1) floats and standard normals (mulberry32 + Box–Muller). */
export function random(seed: number): { uniform(): number; normal(): number } {
  const uniform = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return { uniform, normal };
}

export function tinyConfig(options: TinyModelOptions = {}): EngineConfig {
  const hidden = options.hidden ?? 32;
  const heads = options.heads ?? 4;
  return {
    hiddenSize: hidden,
    intermediateSize: options.intermediate ?? 48,
    numLayers: options.layers ?? 2,
    numHeads: heads,
    numKvHeads: options.kvHeads ?? 2,
    headDim: options.headDim ?? hidden / heads,
    vocabSize: options.vocab ?? 61,
    rmsNormEps: options.rmsNormEps ?? 1e-5,
    ropeTheta: options.ropeTheta ?? 10000,
    ropeScaling: options.ropeScaling ?? { type: 'none' },
    tieWordEmbeddings: options.tied ?? false,
    attentionBias: options.bias ?? false,
    ...options.family,
  };
}

/**
 * Weights scaled so activations stay O(1): linear weights N(0, 1/in), embeddings N(0, 1),
 * norms 1 + N(0, 0.1²), biases N(0, 0.1²). Q and K rows differ per head and within each head's
 * halves, so a wrong RoPE row order changes the output.
 */
export function makeTinyModel(options: TinyModelOptions = {}): TinyModel {
  const config = tinyConfig(options);
  const rng = random(options.seed ?? 1);
  const weights = new Map<string, TinyTensor>();
  for (const { name, shape } of expectedTensors(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (name.endsWith('norm.weight')) for (let i = 0; i < n; i++) data[i] = 1 + 0.1 * rng.normal();
    else if (name.endsWith('.bias')) for (let i = 0; i < n; i++) data[i] = 0.1 * rng.normal();
    else if (name === 'model.embed_tokens.weight') for (let i = 0; i < n; i++) data[i] = rng.normal();
    else {
      const std = 1 / Math.sqrt(shape[1]);
      for (let i = 0; i < n; i++) data[i] = std * rng.normal();
    }
    weights.set(name, { shape, data });
  }
  return { config, weights };
}

/** The model's weights as in-memory TensorSources, for native().createModel. */
export function tinyModelSources(model: TinyModel): TensorSource[] {
  return [...model.weights].map(([name, t]) => ({ name, shape: t.shape.slice(), data: t.data }));
}

/**
 * A small forest for forward(): two prompts of different lengths, the first with a three-way
 * trie after it, every row's next token (and the trie's leaves) asked for as edges. Tokens are
 * seeded and spread over the whole vocabulary.
 */
export function tinyBatch(vocab: number, seed = 3): NativeBatch {
  const rng = random(seed);
  const token = () => Math.floor(rng.uniform() * vocab);
  const tokens: number[] = [];
  const parents: number[] = [];
  const edgeRows: number[] = [];
  const edgeTokens: number[] = [];
  const chain = (length: number, parent: number): number => {
    let last = parent;
    for (let i = 0; i < length; i++) {
      tokens.push(token());
      parents.push(last);
      last = tokens.length - 1;
    }
    return last;
  };
  const promptEnd = chain(6, -1);
  for (let branch = 0; branch < 3; branch++) {
    const leaf = chain(2, promptEnd);
    edgeRows.push(leaf);
    edgeTokens.push(token());
  }
  chain(4, -1);
  for (let r = 0; r < tokens.length; r++)
    if (parents.indexOf(r) >= 0) {
      edgeRows.push(r);
      edgeTokens.push(tokens[parents.indexOf(r)]);
    }
  return {
    tokens: Int32Array.from(tokens),
    parents: Int32Array.from(parents),
    edgeRows: Int32Array.from(edgeRows),
    edgeTokens: Int32Array.from(edgeTokens),
  };
}

/** A step batch of `prompts` causal prompts of `length` seeded tokens each, every next token an edge of equal weight. */
export function chainBatch(vocab: number, prompts: number, length: number, seed = 3): NativeBatch & { edgeWeights: Float32Array } {
  const rng = random(seed);
  const tokens: number[] = [];
  const parents: number[] = [];
  const edgeRows: number[] = [];
  const edgeTokens: number[] = [];
  for (let p = 0; p < prompts; p++)
    for (let i = 0, last = -1; i < length; i++, last = tokens.length - 1) {
      tokens.push(Math.floor(rng.uniform() * vocab));
      parents.push(last);
      if (last >= 0) edgeRows.push(last), edgeTokens.push(tokens[tokens.length - 1]);
    }
  return {
    tokens: Int32Array.from(tokens),
    parents: Int32Array.from(parents),
    edgeRows: Int32Array.from(edgeRows),
    edgeTokens: Int32Array.from(edgeTokens),
    edgeWeights: new Float32Array(edgeRows.length).fill(1 / edgeRows.length),
  };
}
