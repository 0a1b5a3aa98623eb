/**
 * Engine configurations of well-known decoders, and seeded random weights for them, so that
 * throughput can be measured at real sizes without downloading a checkpoint: the weights are
 * made where they live (on the GPU for a CUDA model) from a counter-based generator, and the
 * same seed gives the same weights on every backend.
 */
import { InvalidArgumentError } from '../errors.js';
import type { EngineConfig, TensorSource } from '../native.js';
import { expectedTensors } from './tensors.js';

/** The known shapes random weights can take. */
export type PresetName =
  | 'llama-2-7b'
  | 'llama-2-13b'
  | 'mistral-7b'
  | 'smollm2-135m'
  | 'llama-3.1-8b'
  | 'qwen2.5-7b'
  | 'gemma-7b'
  | 'gemma-2-9b';

const llama2Base = {
  headDim: 128,
  vocabSize: 32000,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  tieWordEmbeddings: false,
  attentionBias: false,
} as const;

/** The shapes of each preset, from the models' Hugging Face config.json. */
export const presets: Readonly<Record<PresetName, EngineConfig>> = {
  'llama-2-7b': { ...llama2Base, hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKvHeads: 32 },
  'llama-2-13b': { ...llama2Base, hiddenSize: 5120, intermediateSize: 13824, numLayers: 40, numHeads: 40, numKvHeads: 40 },
  // Mistral-7B-v0.1: grouped-query attention (8 key/value heads), a wider MLP.
  'mistral-7b': { ...llama2Base, hiddenSize: 4096, intermediateSize: 14336, numLayers: 32, numHeads: 32, numKvHeads: 8 },
  // SmolLM2-135M(-Instruct), the default model's shape.
  'smollm2-135m': {
    hiddenSize: 576,
    intermediateSize: 1536,
    numLayers: 30,
    numHeads: 9,
    numKvHeads: 3,
    headDim: 64,
    vocabSize: 49152,
    rmsNormEps: 1e-5,
    ropeTheta: 100000,
    tieWordEmbeddings: true,
    attentionBias: false,
  },
  // Llama-3.1-8B(-Instruct): GQA 32/8, Llama-3 RoPE scaling, a 128k vocabulary.
  'llama-3.1-8b': {
    hiddenSize: 4096,
    intermediateSize: 14336,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 128,
    vocabSize: 128256,
    rmsNormEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    tieWordEmbeddings: false,
    attentionBias: false,
  },
  // Qwen2.5-7B(-Instruct): q/k/v biases, GQA 28/4 (its sliding window is off in the release).
  'qwen2.5-7b': {
    hiddenSize: 3584,
    intermediateSize: 18944,
    numLayers: 28,
    numHeads: 28,
    numKvHeads: 4,
    headDim: 128,
    vocabSize: 152064,
    rmsNormEps: 1e-6,
    ropeTheta: 1000000,
    tieWordEmbeddings: false,
    attentionBias: true,
  },
  // Gemma-7B(-it), the paper's: GeGLU, √d embeddings, head_dim 256, tied head. Norm weights
  // here are the effective (1 + w) ones, so no offset.
  'gemma-7b': {
    hiddenSize: 3072,
    intermediateSize: 24576,
    numLayers: 28,
    numHeads: 16,
    numKvHeads: 16,
    headDim: 256,
    vocabSize: 256000,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    tieWordEmbeddings: true,
    attentionBias: false,
    activation: 'gelu_tanh',
    embeddingScale: Math.fround(Math.sqrt(3072)),
  },
  // Gemma-2-9B(-it): soft-caps 50 / 30, windowed even layers (4096), sandwich norms.
  'gemma-2-9b': {
    hiddenSize: 3584,
    intermediateSize: 14336,
    numLayers: 42,
    numHeads: 16,
    numKvHeads: 8,
    headDim: 256,
    vocabSize: 256000,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    tieWordEmbeddings: true,
    attentionBias: false,
    activation: 'gelu_tanh',
    embeddingScale: Math.fround(Math.sqrt(3584)),
    sandwichNorms: true,
    attentionScale: 1 / 16,
    attnLogitSoftcap: 50,
    finalLogitSoftcap: 30,
    slidingWindow: 4096,
    layerTypes: Array.from({ length: 42 }, (_, i) => (i % 2 === 0 ? 'sliding_attention' : 'full_attention')),
  },
};

/** A preset's configuration by name; throws InvalidArgumentError naming the known ones. */
export function preset(name: string): EngineConfig {
  if (!Object.prototype.hasOwnProperty.call(presets, name))
    throw new InvalidArgumentError(`unknown model preset '${name}'; known presets: ${Object.keys(presets).join(', ')}`);
  return { ...presets[name as PresetName] };
}

export interface InitOptions {
  /** Base seed; tensor i draws from seed + 7919 i (default 0). */
  seed?: number;
  /** Standard deviation of the normal matrices (default 0.02, as Llama's initializer_range). */
  std?: number;
  /**
   * The type the matrices are stored in (default 'F32'): 'BF16', 'F16', or a GGUF block type
   * ('Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'), rounded as llama.cpp's
   * reference quantizers round. A matrix's rows must be whole blocks (32 values; 256 for the K-quants).
   */
  dtype?: InitDtype;
}

/** Storage types a random-init matrix can be rounded to. */
export const initDtypes = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'] as const;
/** One of initDtypes: the storage a random-init matrix is rounded to. */
export type InitDtype = (typeof initDtypes)[number];

/** 'bf16', 'q8_0', … in any case, checked. */
export function initDtype(name: string): InitDtype {
  const upper = name.toUpperCase();
  if (!(initDtypes as readonly string[]).includes(upper))
    throw new InvalidArgumentError(`unknown weight dtype '${name}' for random weights; known: ${initDtypes.map((d) => d.toLowerCase()).join(', ')}`);
  return upper as InitDtype;
}

interface Shaped {
  name: string;
  shape: number[];
  kind: 'normal' | 'ones' | 'zeros';
}

function tensorShapes(c: EngineConfig): Shaped[] {
  return expectedTensors(c).map(({ name, shape }) => ({
    name,
    shape,
    kind: name.endsWith('norm.weight') ? 'ones' : name.endsWith('.bias') ? 'zeros' : 'normal',
  }));
}

/**
 * `Init` tensor sources for every weight of `config`: linear and embedding matrices normal
 * with `std`, norms ones, biases zeros, each tensor from its own seed.
 */
export function initTensorSources(config: EngineConfig, options: InitOptions = {}): TensorSource[] {
  if (config.normWeightOffset) throw new InvalidArgumentError('random-init norms are the effective weights (ones); give a config without normWeightOffset');
  const seed = options.seed ?? 0;
  const std = options.std ?? 0.02;
  const dtype = initDtype(options.dtype ?? 'F32');
  if (!Number.isSafeInteger(seed) || seed < 0) throw new InvalidArgumentError(`init seed must be a non-negative integer, got ${seed}`);
  if (!(std > 0) || !Number.isFinite(std)) throw new InvalidArgumentError(`init std must be a positive number, got ${std}`);
  return tensorShapes(config).map((t, i): TensorSource => ({
    name: t.name,
    shape: t.shape,
    init: t.kind === 'normal' ? { kind: 'normal', std, seed: seed + 7919 * i, dtype } : { kind: t.kind },
  }));
}

/** The number of weights a config holds (embeddings, head, every layer). */
export function parameterCount(config: EngineConfig): number {
  return tensorShapes(config).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}
