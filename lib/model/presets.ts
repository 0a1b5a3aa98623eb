/**
 * Engine configurations of well-known decoders, and seeded random weights for them, so that
 * throughput can be measured at real sizes without downloading a checkpoint: the weights are
 * made where they live (on the GPU for a CUDA model) from a counter-based generator, and the
 * same seed gives the same weights on every backend.
 */
import { InvalidArgumentError } from '../errors.js';
import type { EngineConfig, TensorSource } from '../native.js';

/** The known shapes random weights can take. */
export type PresetName = 'llama-2-7b' | 'llama-2-13b' | 'mistral-7b' | 'smollm2-135m';

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
}

interface Shaped {
  name: string;
  shape: number[];
  kind: 'normal' | 'ones' | 'zeros';
}

function tensorShapes(c: EngineConfig): Shaped[] {
  const d = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const out: Shaped[] = [
    { name: 'model.embed_tokens.weight', shape: [c.vocabSize, d], kind: 'normal' },
    { name: 'model.norm.weight', shape: [d], kind: 'ones' },
  ];
  if (!c.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [c.vocabSize, d], kind: 'normal' });
  const linear: [string, number, number][] = [
    ['self_attn.q_proj', qDim, d],
    ['self_attn.k_proj', kvDim, d],
    ['self_attn.v_proj', kvDim, d],
    ['self_attn.o_proj', d, qDim],
    ['mlp.gate_proj', c.intermediateSize, d],
    ['mlp.up_proj', c.intermediateSize, d],
    ['mlp.down_proj', d, c.intermediateSize],
  ];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    out.push({ name: `${p}input_layernorm.weight`, shape: [d], kind: 'ones' });
    out.push({ name: `${p}post_attention_layernorm.weight`, shape: [d], kind: 'ones' });
    for (const [module, rows, cols] of linear) out.push({ name: `${p}${module}.weight`, shape: [rows, cols], kind: 'normal' });
    if (c.attentionBias)
      for (const [module, rows] of linear.slice(0, 3)) out.push({ name: `${p}${module}.bias`, shape: [rows], kind: 'zeros' });
  }
  return out;
}

/**
 * `Init` tensor sources for every weight of `config`: linear and embedding matrices normal
 * with `std`, norms ones, biases zeros, each tensor from its own seed.
 */
export function initTensorSources(config: EngineConfig, options: InitOptions = {}): TensorSource[] {
  const seed = options.seed ?? 0;
  const std = options.std ?? 0.02;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new InvalidArgumentError(`init seed must be a non-negative integer, got ${seed}`);
  if (!(std > 0) || !Number.isFinite(std)) throw new InvalidArgumentError(`init std must be a positive number, got ${std}`);
  return tensorShapes(config).map((t, i): TensorSource => ({
    name: t.name,
    shape: t.shape,
    init: t.kind === 'normal' ? { kind: 'normal', std, seed: seed + 7919 * i } : { kind: t.kind },
  }));
}

/** The number of weights a config holds (embeddings, head, every layer). */
export function parameterCount(config: EngineConfig): number {
  return tensorShapes(config).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}
