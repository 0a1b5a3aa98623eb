/**
 * The engine's model shape (EngineConfig) from a Hugging Face config.json or GGUF metadata.
 * Families: llama (SmolLM2, Llama-2, Llama-3 with its `llama3` RoPE scaling), mistral (its
 * sliding window), qwen2 (q/k/v biases, optional window layers), qwen3 (q/k norms), gemma
 * (GeGLU, √d embeddings, (1 + w) norms), gemma2 (soft-caps, alternating window layers,
 * sandwich norms, query_pre_attn_scalar) and gemma3_text (q/k norms, layer_types, local and
 * global RoPE bases) and phi3 (fused qkv_proj / gate_up_proj, split at load; its window; its
 * longrope/su scaling and partial rotary dims). Each is a set of EngineConfig
 * switches over the one Llama graph.
 *
 * Every key transformers' config class for the model type reads is either honoured exactly or,
 * when it asks for something the engine cannot do (a RoPE scaling it lacks, biases it has no
 * place for, bidirectional attention, dropout, …), an UnsupportedError naming key and value —
 * never ignored. Missing config.json keys take the defaults transformers gives them; missing
 * required GGUF keys and wrong-typed values of either are ModelFormatErrors naming the key.
 */
import { ModelFormatError, UnsupportedError } from '../errors.js';
import { describeValue, metaArray, metaString, type GgufFile, type GgufValue } from '../formats/gguf.js';
import type { EngineConfig } from '../native.js';

export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gemma' | 'gemma2' | 'gemma3_text' | 'phi3';
type RopeScaling = NonNullable<EngineConfig['ropeScaling']>;

/** Each size must be below this (16.7 M), which keeps every product of two sizes exact in a double. */
export const MAX_MODEL_DIMENSION = 1 << 24;

/** transformers' defaults for a key missing from config.json, per model type. */
interface HfDefaults {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number | null;
  eps: number;
  headDim?: number;
  tied?: boolean;
  slidingWindow?: number;
}
const hfDefaults: Record<Architecture, HfDefaults> = {
  llama: { vocab: 32000, hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: null, eps: 1e-6 },
  mistral: { vocab: 32000, hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kvHeads: 8, eps: 1e-6, slidingWindow: 4096 },
  qwen2: { vocab: 151936, hidden: 4096, intermediate: 22016, layers: 32, heads: 32, kvHeads: 32, eps: 1e-6, slidingWindow: 4096 },
  qwen3: { vocab: 151936, hidden: 4096, intermediate: 22016, layers: 32, heads: 32, kvHeads: 32, eps: 1e-6, headDim: 128, slidingWindow: 4096 },
  gemma: { vocab: 256000, hidden: 3072, intermediate: 24576, layers: 28, heads: 16, kvHeads: 16, eps: 1e-6, headDim: 256, tied: true },
  gemma2: { vocab: 256000, hidden: 2304, intermediate: 9216, layers: 26, heads: 8, kvHeads: 4, eps: 1e-6, headDim: 256, tied: true, slidingWindow: 4096 },
  gemma3_text: { vocab: 262208, hidden: 2304, intermediate: 9216, layers: 26, heads: 8, kvHeads: 4, eps: 1e-6, headDim: 256, tied: true, slidingWindow: 4096 },
  phi3: { vocab: 32064, hidden: 3072, intermediate: 8192, layers: 32, heads: 32, kvHeads: null, eps: 1e-5 },
};
/** The Hugging Face model_types diffuse runs, for error messages. */
export const families = Object.keys(hfDefaults).join(', ');

/** Checks the invariants the engine relies on; `file` and the field names go into the error. */
export function checkEngineConfig(config: EngineConfig, file: string): EngineConfig {
  const ints: [keyof EngineConfig, number][] = [
    ['hiddenSize', config.hiddenSize],
    ['intermediateSize', config.intermediateSize],
    ['numLayers', config.numLayers],
    ['numHeads', config.numHeads],
    ['numKvHeads', config.numKvHeads],
    ['headDim', config.headDim],
    ['vocabSize', config.vocabSize],
  ];
  for (const [key, v] of ints)
    if (!Number.isSafeInteger(v) || v <= 0 || v >= MAX_MODEL_DIMENSION) throw new ModelFormatError(file, key, `must be a positive integer below ${MAX_MODEL_DIMENSION}, not ${v}`);
  if (config.numHeads % config.numKvHeads !== 0)
    throw new ModelFormatError(file, 'numKvHeads', `${config.numHeads} attention heads cannot be shared evenly by ${config.numKvHeads} key/value heads`);
  if (config.headDim % 2 !== 0) throw new ModelFormatError(file, 'headDim', `RoPE needs an even head dimension, not ${config.headDim}`);
  for (const [key, v] of [['rmsNormEps', config.rmsNormEps], ['ropeTheta', config.ropeTheta]] as const)
    if (!Number.isFinite(v) || v <= 0) throw new ModelFormatError(file, key, `must be a positive finite number, not ${v}`);
  for (const key of ['embeddingScale', 'attentionScale', 'localRopeTheta'] as const) {
    const v = config[key];
    if (v !== undefined && (!Number.isFinite(v) || v <= 0)) throw new ModelFormatError(file, key, `must be a positive finite number, not ${v}`);
  }
  for (const key of ['attnLogitSoftcap', 'finalLogitSoftcap'] as const) {
    const v = config[key];
    if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw new ModelFormatError(file, key, `must be a positive finite number (or 0 for none), not ${v}`);
  }
  if (config.normWeightOffset !== undefined && config.normWeightOffset !== 0 && config.normWeightOffset !== 1)
    throw new ModelFormatError(file, 'normWeightOffset', `must be 0 or 1, not ${config.normWeightOffset}`);
  if (config.slidingWindow !== undefined && (!Number.isSafeInteger(config.slidingWindow) || config.slidingWindow < 0))
    throw new ModelFormatError(file, 'slidingWindow', `must be a non-negative integer, not ${config.slidingWindow}`);
  if (config.rotaryDim !== undefined && (!Number.isSafeInteger(config.rotaryDim) || config.rotaryDim <= 0 || config.rotaryDim % 2 !== 0 || config.rotaryDim > config.headDim))
    throw new ModelFormatError(file, 'rotaryDim', `must be an even positive integer at most headDim ${config.headDim}, not ${config.rotaryDim}`);
  if (config.layerTypes !== undefined && config.layerTypes.length !== config.numLayers)
    throw new ModelFormatError(file, 'layerTypes', `must name ${config.numLayers} layers, not ${config.layerTypes.length}`);
  const s = config.ropeScaling;
  if (s && s.type !== 'none') {
    for (const key of ['factor', 'lowFreqFactor', 'highFreqFactor', 'originalMaxPositionEmbeddings'] as const) {
      const v = s[key];
      if (v !== undefined && (!Number.isFinite(v) || v <= 0)) throw new ModelFormatError(file, `ropeScaling.${key}`, `must be a positive finite number, not ${v}`);
    }
    if (s.type === 'longrope') {
      const half = (config.rotaryDim ?? config.headDim) / 2;
      for (const key of ['shortFactor', 'longFactor'] as const) {
        const v = s[key];
        if (!v || v.length !== half || !v.every((x) => Number.isFinite(x) && x > 0))
          throw new ModelFormatError(file, `ropeScaling.${key}`, `must hold ${half} positive finite numbers (one per rotary frequency)`);
      }
      if (s.attentionFactor !== undefined && !(Number.isFinite(s.attentionFactor) && s.attentionFactor > 0))
        throw new ModelFormatError(file, 'ropeScaling.attentionFactor', `must be a positive finite number, not ${s.attentionFactor}`);
      if (s.originalMaxPositionEmbeddings === undefined) throw new ModelFormatError(file, 'ropeScaling.originalMaxPositionEmbeddings', 'is missing; longrope needs it');
    }
    if (s.type === 'llama3' && !((s.highFreqFactor ?? 4) > (s.lowFreqFactor ?? 1)))
      throw new ModelFormatError(file, 'ropeScaling.highFreqFactor', `must be above lowFreqFactor (${s.lowFreqFactor}), not ${s.highFreqFactor}`);
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// Hugging Face config.json

type Json = Record<string, unknown>;

class HfReader {
  constructor(
    readonly json: Json,
    readonly file: string,
  ) {}

  fail(key: string, problem: string): never {
    throw new ModelFormatError(this.file, key, problem);
  }

  private value(key: string, from: Json = this.json): unknown {
    const v = from[key];
    return v === null ? undefined : v;
  }

  int(key: string, fallback: number): number {
    const v = this.value(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) this.fail(key, `must be a positive integer, not ${JSON.stringify(v)}`);
    return v;
  }

  num(key: string, fallback: number, from?: Json, prefix = ''): number {
    const v = this.value(key, from);
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(prefix + key, `must be a positive number, not ${JSON.stringify(v)}`);
    return v;
  }

  required(key: string, from: Json, prefix: string): number {
    if (this.value(key, from) === undefined) this.fail(prefix + key, 'is missing; this RoPE scaling needs it');
    return this.num(key, 0, from, prefix);
  }

  /** A list of positive numbers (LongRoPE's per-frequency factors). */
  factors(key: string, from: Json, prefix: string): number[] {
    const v = this.value(key, from);
    if (v === undefined) this.fail(prefix + key, 'is missing; longrope scaling needs it');
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0))
      this.fail(prefix + key, `must be a list of positive numbers, not ${JSON.stringify(v).slice(0, 80)}`);
    return v as number[];
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.value(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, not ${JSON.stringify(v)}`);
    return v;
  }

  str(key: string): string | undefined {
    const v = this.value(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') this.fail(key, `must be a string, not ${JSON.stringify(v)}`);
    return v;
  }

  object(key: string): Json | undefined {
    const v = this.value(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(key, `must be an object, not ${JSON.stringify(v)}`);
    return v as Json;
  }

  /**
   * RoPE theta and scaling: `rope_theta` + `rope_scaling` ({type | rope_type, factor, …}), or
   * the newer `rope_parameters` that holds both.
   */
  rope(defaultTheta = 10000, from?: { params: Json; key: string }, longropeNames = ['longrope']): { theta: number; scaling: RopeScaling } {
    const params = from ? from.params : this.object('rope_parameters');
    const scalingKey = from ? from.key : params ? 'rope_parameters' : 'rope_scaling';
    const scaling = params ?? this.object('rope_scaling');
    const theta =
      params && params.rope_theta !== undefined ? this.num('rope_theta', defaultTheta, params, `${scalingKey}.`) : from ? defaultTheta : this.num('rope_theta', defaultTheta);
    if (!scaling) return { theta, scaling: { type: 'none' } };
    const typeValue = scaling.rope_type ?? scaling.type ?? 'default';
    if (typeof typeValue !== 'string') this.fail(`${scalingKey}.rope_type`, `must be a string, not ${JSON.stringify(typeValue)}`);
    const prefix = `${scalingKey}.`;
    switch (typeValue) {
      case 'default':
        return { theta, scaling: { type: 'none' } };
      case 'linear':
        return { theta, scaling: { type: 'linear', factor: this.required('factor', scaling, prefix) } };
      case 'llama3':
        return {
          theta,
          scaling: {
            type: 'llama3',
            factor: this.required('factor', scaling, prefix),
            lowFreqFactor: this.required('low_freq_factor', scaling, prefix),
            highFreqFactor: this.required('high_freq_factor', scaling, prefix),
            originalMaxPositionEmbeddings: this.required('original_max_position_embeddings', scaling, prefix),
          },
        };
      default:
        if (longropeNames.includes(typeValue)) {
          const factor = this.value('factor', scaling);
          const attentionFactor = this.value('attention_factor', scaling);
          const original = this.value('original_max_position_embeddings', scaling);
          return {
            theta,
            scaling: {
              type: 'longrope',
              shortFactor: this.factors('short_factor', scaling, prefix),
              longFactor: this.factors('long_factor', scaling, prefix),
              ...(factor !== undefined ? { factor: this.num('factor', 0, scaling, prefix) } : {}),
              ...(attentionFactor !== undefined ? { attentionFactor: this.num('attention_factor', 0, scaling, prefix) } : {}),
              ...(original !== undefined ? { originalMaxPositionEmbeddings: this.num('original_max_position_embeddings', 0, scaling, prefix) } : {}),
            },
          };
        }
        throw new UnsupportedError(`${this.file}: RoPE scaling '${typeValue}' (${scalingKey}) is not supported; diffuse supports the default, 'linear', 'llama3' and 'longrope'`);
    }
  }

  /** A non-negative number, or 0 when absent (soft-caps). */
  optionalPositive(key: string): number {
    const v = this.value(key);
    if (v === undefined) return 0;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(key, `must be a positive number or null, not ${JSON.stringify(v)}`);
    return v;
  }

  /** Refuses a key whose value asks for something the engine does not do. */
  refuse(key: string, honoured: (v: unknown) => boolean, what: string): void {
    const v = this.value(key);
    if (v !== undefined && !honoured(v)) throw new UnsupportedError(`${this.file}: ${key} ${JSON.stringify(v)} is not supported; ${what}`);
  }

  layerTypes(layers: number): ('full_attention' | 'sliding_attention')[] | undefined {
    const v = this.value('layer_types');
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length !== layers) this.fail('layer_types', `must be an array of ${layers} layer types, not ${JSON.stringify(v)}`);
    for (const t of v)
      if (t !== 'full_attention' && t !== 'sliding_attention')
        throw new UnsupportedError(`${this.file}: layer_types holds '${String(t)}'; the engine runs 'full_attention' and 'sliding_attention' layers`);
    return v as ('full_attention' | 'sliding_attention')[];
  }
}

/** Per-layer types with transformers' default pattern: windowed unless (i + 1) % period == 0. */
function periodicLayerTypes(layers: number, period: number): ('full_attention' | 'sliding_attention')[] {
  return Array.from({ length: layers }, (_, i) => ((i + 1) % period !== 0 ? 'sliding_attention' : 'full_attention'));
}

/**
 * LongRoPE's remaining parameters as transformers fills them in (standardize_rope_params and
 * _compute_longrope_parameters): the original context from the top-level
 * original_max_position_embeddings when the config has one (Phi3Config always does, default
 * 4096), else from the scaling dict, else max_position_embeddings; factor, when absent,
 * max_position_embeddings / original; attention_factor, when absent, √(1 + ln factor / ln
 * original) (1 when factor ≤ 1). Each factor list must have rotaryDim / 2 values.
 */
function longropeScaling(r: HfReader, fields: Json, arch: Architecture, s: RopeScaling, rotaryDim: number, partialKey: string): RopeScaling {
  const maxPositions = r.int('max_position_embeddings', arch === 'phi3' ? 4096 : 0);
  if (maxPositions === 0) r.fail('max_position_embeddings', 'is missing; longrope scaling needs it');
  const original =
    fields.original_max_position_embeddings != null || arch === 'phi3'
      ? r.int('original_max_position_embeddings', 4096)
      : (s.originalMaxPositionEmbeddings ?? maxPositions);
  const factor = s.factor ?? maxPositions / original;
  const attentionFactor = s.attentionFactor ?? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original)));
  for (const [key, v] of [['short_factor', s.shortFactor], ['long_factor', s.longFactor]] as const)
    if (v!.length !== rotaryDim / 2)
      r.fail(`rope_scaling.${key}`, `has ${v!.length} values; the ${rotaryDim} rotary dims (head dim × ${partialKey}) need ${rotaryDim / 2}`);
  return { type: 'longrope', shortFactor: s.shortFactor, longFactor: s.longFactor, originalMaxPositionEmbeddings: original, attentionFactor };
}

/** The EngineConfig of a parsed config.json; `file` is its path, for messages. */
export function engineConfigFromHf(json: unknown, file: string): EngineConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ModelFormatError(file, undefined, 'must hold a JSON object');
  const r: HfReader = new HfReader(json as Json, file);
  const fields = json as Json;
  const modelType = r.str('model_type');
  if (modelType === undefined) r.fail('model_type', 'is missing; config.json names the architecture there (e.g. "llama")');
  if (!(modelType in hfDefaults)) {
    const hint = modelType === 'gemma3' ? ' (a Gemma 3 checkpoint with vision; its text model, model_type gemma3_text, is supported)' : '';
    throw new UnsupportedError(`${file}: model_type '${modelType}' is not supported${hint}; diffuse runs these decoder families: ${families}`);
  }
  const arch = modelType as Architecture;
  const d = hfDefaults[arch];
  const gemma = arch === 'gemma' || arch === 'gemma2' || arch === 'gemma3_text';

  // Keys of any model type that change what the checkpoint computes.
  r.refuse('quantization_config', () => false, 'load an unquantised (f32/bf16/f16) checkpoint or a GGUF');
  r.refuse('auto_map', () => false, 'the model needs its own Python code (trust_remote_code), which diffuse cannot run');
  r.refuse('attention_dropout', (v) => v === 0, 'the engine has no dropout (transformers applies it while training)');
  r.refuse('use_bidirectional_attention', (v) => v === false, 'the engine runs causal decoders only');
  for (const key of ['num_experts', 'num_local_experts', 'n_routed_experts', 'moe_intermediate_size'])
    r.refuse(key, (v) => v === 0, 'mixture-of-experts layers are not supported');
  for (const key of ['resid_pdrop', 'embd_pdrop']) r.refuse(key, (v) => v === 0, 'the engine has no dropout (transformers applies it while training)');
  // Partial rotary dims: transformers' Phi-3 rotates the first int(head_dim · factor) dims of each
  // head (the RoPE dict's own factor first — rope_parameters, or rope_scaling which becomes it —
  // then the top-level key); its other families' RoPE has no pass-through part.
  const ropeDictKey = r.object('rope_parameters') ? 'rope_parameters' : 'rope_scaling';
  const ropeParams = r.object(ropeDictKey);
  const partialKey = ropeParams?.partial_rotary_factor != null ? `${ropeDictKey}.partial_rotary_factor` : 'partial_rotary_factor';
  const partial = ropeParams?.partial_rotary_factor ?? fields.partial_rotary_factor ?? 1;
  if (partial !== 1 && arch !== 'phi3')
    throw new UnsupportedError(`${file}: ${partialKey} ${JSON.stringify(partial)} is not supported for ${arch}; its RoPE rotates whole heads (Phi-3's partial rotary is supported)`);
  if (typeof partial !== 'number' || !(partial > 0 && partial <= 1)) r.fail(partialKey, `must be a number in (0, 1], not ${JSON.stringify(partial)}`);

  // The MLP's activation: SiLU (SwiGLU) or tanh-GELU (GeGLU).
  const actKey = arch === 'gemma2' || arch === 'gemma3_text' ? 'hidden_activation' : 'hidden_act';
  const act = r.str(actKey) ?? (gemma ? 'gelu_pytorch_tanh' : 'silu');
  // transformers' GemmaConfig turns the legacy 'gelu' of the official Gemma releases into the tanh approximation.
  const geglu = act === 'gelu_pytorch_tanh' || (arch === 'gemma' && act === 'gelu');
  if (!geglu && act !== 'silu' && act !== 'swish')
    throw new UnsupportedError(`${file}: ${actKey} '${act}' is not supported; the engine's MLP gate is silu (SwiGLU) or gelu_pytorch_tanh (GeGLU)`);
  r.refuse('mlp_bias', (v) => v === false, "the engine's MLP has no biases");
  // Llama's, Qwen3's and Gemma's attention_bias puts a bias on o_proj as well, which the engine
  // has no place for; Qwen2 always has q/k/v biases and never an o_proj one.
  if (arch !== 'qwen2') r.refuse('attention_bias', (v) => v === false, 'biases on q, k, v and o; the engine supports q/k/v biases only (Qwen2\'s layout)');

  const hiddenSize = r.int('hidden_size', d.hidden);
  const numHeads = r.int('num_attention_heads', d.heads);
  if (fields.head_dim == null && d.headDim === undefined && hiddenSize % numHeads !== 0)
    r.fail('head_dim', `is missing, and hidden_size ${hiddenSize} is not a multiple of the ${numHeads} heads to derive it from (transformers refuses this too)`);
  const numLayers = r.int('num_hidden_layers', d.layers);
  const headDim = r.int('head_dim', d.headDim ?? hiddenSize / numHeads);

  // RoPE: Gemma 3 has one set of parameters per layer type (rope_parameters.full_attention /
  // .sliding_attention, or the legacy rope_theta + rope_scaling for global layers and
  // rope_local_base_freq for local ones).
  let rope: { theta: number; scaling: RopeScaling };
  let localRopeTheta: number | undefined;
  if (arch === 'gemma3_text') {
    const params = r.object('rope_parameters');
    if (params && (params.full_attention !== undefined || params.sliding_attention !== undefined)) {
      const part = (key: string): Json => {
        const v = params[key];
        if (v === undefined || v === null) return {};
        if (typeof v !== 'object' || Array.isArray(v)) r.fail(`rope_parameters.${key}`, `must be an object, not ${JSON.stringify(v)}`);
        return v as Json;
      };
      rope = r.rope(1e6, { params: part('full_attention'), key: 'rope_parameters.full_attention' });
      const local = r.rope(1e4, { params: part('sliding_attention'), key: 'rope_parameters.sliding_attention' });
      if (local.scaling.type !== 'none')
        throw new UnsupportedError(`${file}: rope_parameters.sliding_attention has ${local.scaling.type} scaling; the engine scales the global layers' RoPE only`);
      localRopeTheta = local.theta;
    } else {
      rope = r.rope(1e6);
      localRopeTheta = r.num('rope_local_base_freq', 1e4);
    }
  } else rope = r.rope(10000, undefined, arch === 'phi3' ? ['longrope', 'su', 'yarn'] : undefined);  // Phi3Config renames su and yarn to longrope
  const rotaryDim = Math.trunc(headDim * (partial as number));
  if (partial !== 1 && (rotaryDim % 2 !== 0 || rotaryDim === 0))
    throw new UnsupportedError(`${file}: ${partialKey} ${partial} rotates ${rotaryDim} of each ${headDim}-wide head; RoPE needs an even, positive number of dims`);
  if (rope.scaling.type === 'longrope') rope.scaling = longropeScaling(r, fields, arch, rope.scaling, rotaryDim, partialKey);

  // The sliding window and which layers use it, as transformers derives them.
  let slidingWindow = 0;
  let layerTypes = r.layerTypes(numLayers);
  const window = (): number => {
    const v = fields.sliding_window === undefined ? d.slidingWindow : fields.sliding_window;
    if (v === null) return 0;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) r.fail('sliding_window', `must be a positive integer or null, not ${JSON.stringify(v)}`);
    return v;
  };
  if (arch === 'mistral') {
    slidingWindow = window();
    r.refuse('layer_types', () => false, 'Mistral windows every layer alike');
  } else if (arch === 'qwen2' || arch === 'qwen3') {
    slidingWindow = r.bool('use_sliding_window', false) ? window() : 0;
    const firstWindowed = r.int('max_window_layers', 28);
    layerTypes ??= Array.from({ length: numLayers }, (_, i) => (slidingWindow > 0 && i >= firstWindowed ? 'sliding_attention' : 'full_attention'));
    if (slidingWindow === 0 && layerTypes.includes('sliding_attention'))
      throw new UnsupportedError(`${file}: layer_types has sliding_attention layers but use_sliding_window is false (no window); transformers cannot run this either`);
  } else if (arch === 'phi3') {
    slidingWindow = window();
  } else if (arch === 'gemma2' || arch === 'gemma3_text') {
    slidingWindow = window();
    const period = arch === 'gemma2' ? 2 : r.int('sliding_window_pattern', 6);
    layerTypes ??= periodicLayerTypes(numLayers, period);
  } else {
    r.refuse('sliding_window', () => false, `${arch} attends to the whole sequence`);
    r.refuse('layer_types', (v) => Array.isArray(v) && v.every((t) => t === 'full_attention'), `${arch} has full-attention layers only`);
  }
  if (slidingWindow === 0 || (layerTypes && !layerTypes.includes('sliding_attention'))) {
    slidingWindow = 0;
    layerTypes = undefined;
  }
  if (layerTypes?.every((t) => t === 'sliding_attention')) layerTypes = undefined;

  const config: EngineConfig = {
    hiddenSize,
    intermediateSize: r.int('intermediate_size', d.intermediate),
    numLayers,
    numHeads,
    // An explicit null means "as many as the attention heads" (transformers 4's rule for every type).
    numKvHeads: r.int('num_key_value_heads', fields.num_key_value_heads === null ? numHeads : (d.kvHeads ?? numHeads)),
    headDim,
    vocabSize: r.int('vocab_size', d.vocab),
    rmsNormEps: r.num('rms_norm_eps', d.eps),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    tieWordEmbeddings: r.bool('tie_word_embeddings', d.tied ?? false),
    attentionBias: arch === 'qwen2',
  };
  if (geglu) config.activation = 'gelu_tanh';
  if (gemma) {
    config.normWeightOffset = 1;
    // transformers casts the normaliser √hidden to the hidden states' dtype (float32 here).
    config.embeddingScale = Math.fround(Math.sqrt(hiddenSize));
  }
  if (arch === 'gemma2' || arch === 'gemma3_text') {
    config.sandwichNorms = true;
    config.attentionScale = r.num('query_pre_attn_scalar', 256) ** -0.5;
    const attnCap = r.optionalPositive('attn_logit_softcapping');
    const finalCap = r.optionalPositive('final_logit_softcapping');
    if (fields.attn_logit_softcapping === undefined && arch === 'gemma2') config.attnLogitSoftcap = 50;
    else if (attnCap) config.attnLogitSoftcap = attnCap;
    if (fields.final_logit_softcapping === undefined && arch === 'gemma2') config.finalLogitSoftcap = 30;
    else if (finalCap) config.finalLogitSoftcap = finalCap;
  }
  if (arch === 'qwen3' || arch === 'gemma3_text') config.qkNorm = true;
  if (arch === 'phi3') config.fusedProjections = true;
  if (rotaryDim !== headDim) config.rotaryDim = rotaryDim;
  if (slidingWindow > 0) {
    config.slidingWindow = slidingWindow;
    if (layerTypes) config.layerTypes = layerTypes;
  }
  if (localRopeTheta !== undefined && slidingWindow > 0) config.localRopeTheta = localRopeTheta;
  return checkEngineConfig(config, file);
}

// ---------------------------------------------------------------------------------------------
// GGUF metadata

/** GGUF architectures served, and whether llama.cpp's converter permuted their Q/K rows. */
const ggufArchitectures: Record<string, { arch: Architecture; permutedQk: boolean }> = {
  // convert_hf_to_gguf.py converts Llama, Mistral and SmolLM2 checkpoints as "llama", with
  // LlamaModel.permute applied to q_proj and k_proj for ggml's interleaved RoPE.
  llama: { arch: 'llama', permutedQk: true },
  // Qwen2/3 and Gemma 1/2/3 use ggml's NeoX RoPE, which matches Hugging Face's layout: no
  // permutation. The Gemma converters fold the (1 + w) of every norm into the stored weights.
  qwen2: { arch: 'qwen2', permutedQk: false },
  qwen3: { arch: 'qwen3', permutedQk: false },
  gemma: { arch: 'gemma', permutedQk: false },
  gemma2: { arch: 'gemma2', permutedQk: false },
  gemma3: { arch: 'gemma3_text', permutedQk: false },
  // Phi-3 keeps q/k/v fused (attn_qkv) and gate/up fused (ffn_up, gate rows first).
  phi3: { arch: 'phi3', permutedQk: false },
};

/**
 * The GGUF architecture convert_hf_to_gguf.py converts a Hugging Face model_type to, and whether
 * it permutes Q/K there (Mistral converts as Llama); undefined for a model_type it has none for.
 */
export function convertedGgufArchitecture(modelType: string): { name: string; permutedQk: boolean } | undefined {
  const arch = modelType === 'mistral' ? 'llama' : modelType;
  const found = Object.entries(ggufArchitectures).find(([, a]) => a.arch === arch);
  return found && { name: found[0], permutedQk: found[1].permutedQk };
}

export function ggufArchitecture(gguf: GgufFile): { name: string; arch: Architecture; permutedQk: boolean } {
  const name = metaString(gguf, 'general.architecture');
  if (name === undefined) throw new ModelFormatError(gguf.path, 'general.architecture', 'is missing');
  const known = ggufArchitectures[name];
  if (!known)
    throw new UnsupportedError(
      `${gguf.path}: GGUF architecture '${name}' is not supported; diffuse runs ${Object.keys(ggufArchitectures).join(', ')} ('llama' includes Mistral and SmolLM2)`,
    );
  return { name, ...known };
}

class GgufReader {
  constructor(
    readonly gguf: GgufFile,
    readonly prefix: string,
  ) {}

  fail(key: string, problem: string): never {
    throw new ModelFormatError(this.gguf.path, key, problem);
  }

  /**
   * A positive integer. Per-layer arrays (some converters write head counts that way) are
   * accepted when every layer has the same value.
   */
  int(suffix: string, fallback?: number): number {
    const key = this.prefix + suffix;
    let v: GgufValue | undefined = this.gguf.metadata.get(key);
    if (v === undefined) {
      if (fallback === undefined) this.fail(key, 'is missing');
      return fallback;
    }
    if (Array.isArray(v)) {
      const perLayer: GgufValue[] = v;
      if (perLayer.length === 0) this.fail(key, 'is an empty array');
      if (perLayer.some((x) => x !== perLayer[0]))
        throw new UnsupportedError(`${this.gguf.path}: ${key} differs between layers (${perLayer.slice(0, 8).join(', ')}…); the engine needs every layer alike`);
      v = perLayer[0];
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) this.fail(key, `must be a positive integer, not ${describeValue(v)}`);
    return v;
  }

  num(suffix: string, fallback?: number): number {
    const key = this.prefix + suffix;
    const v = this.gguf.metadata.get(key);
    if (v === undefined) {
      if (fallback === undefined) this.fail(key, 'is missing');
      return fallback;
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(key, `must be a positive number, not ${describeValue(v)}`);
    return v;
  }
}

/**
 * Llama-3 RoPE parameters that reproduce llama.cpp's per-frequency divisors (`rope_freqs`), or
 * undefined when none do. The converter computes them from factor, low/high_freq_factor and an
 * original context of 8192; only the ratios original/low and original/high matter, so the
 * original context is fixed at 8192 and the rest recovered (Meta's 1 and 4 first, else a
 * least-squares fit of the blended band), then checked against every divisor.
 */
export function llama3ScalingFromRopeFreqs(divisors: Float32Array, theta: number, headDim: number): RopeScaling | undefined {
  const half = headDim / 2;
  const original = 8192;
  const inv = Array.from({ length: half }, (_, i) => 1 / theta ** ((2 * i) / headDim));
  const wavelengths = inv.map((f) => (2 * Math.PI) / f);
  const factor = divisors.reduce((a, b) => Math.max(a, b), 0);
  const reproduces = (low: number, high: number): boolean =>
    wavelengths.every((wl, i) => {
      let divisor = 1;
      if (wl > original / low) divisor = factor;
      else if (wl >= original / high) {
        const smooth = (original / wl - low) / (high - low);
        divisor = 1 / ((1 - smooth) / factor + smooth);
      }
      return Math.abs(divisor - divisors[i]) <= 1e-5 * Math.max(1, divisor);
    });
  const scaling = (low: number, high: number): RopeScaling => ({ type: 'llama3', factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: original });
  if (reproduces(1, 4)) return scaling(1, 4);
  const xs: number[] = [];
  const ys: number[] = [];
  divisors.forEach((dv, i) => {
    if (Math.abs(dv - 1) > 1e-6 && Math.abs(dv - factor) > 1e-6 * factor) {
      xs.push(original / wavelengths[i]);
      ys.push((1 / dv - 1 / factor) / (1 - 1 / factor));
    }
  });
  if (xs.length < 2) return undefined;
  const mx = xs.reduce((a, b) => a + b) / xs.length;
  const my = ys.reduce((a, b) => a + b) / ys.length;
  let sxy = 0;
  let sxx = 0;
  xs.forEach((x, i) => {
    sxy += (x - mx) * (ys[i] - my);
    sxx += (x - mx) ** 2;
  });
  const slope = sxy / sxx;
  if (!(slope > 0) || !Number.isFinite(slope)) return undefined;
  const low = (slope * mx - my) / slope;
  const high = low + 1 / slope;
  return low > 0 && reproduces(low, high) ? scaling(low, high) : undefined;
}

/** The EngineConfig of a GGUF file's metadata (and tensor directory, for tying and RoPE). */
export function engineConfigFromGguf(gguf: GgufFile): EngineConfig {
  const file = gguf.path;
  const { name, arch } = ggufArchitecture(gguf);
  const r: GgufReader = new GgufReader(gguf, `${name}.`);
  if (arch !== 'qwen2') {
    const bias = gguf.tensors.find((t) => /^blk\.\d+\.attn_(q|k|v|output)\.bias$/.test(t.name));
    if (bias) throw new UnsupportedError(`${file}: has attention biases (${bias.name}) in a '${name}' model; the engine supports q/k/v biases in Qwen2's layout only`);
  }
  for (const key of ['expert_count', 'expert_used_count'])
    if ((gguf.metadata.get(`${name}.${key}`) ?? 0) !== 0)
      throw new UnsupportedError(`${file}: ${name}.${key} is ${describeValue(gguf.metadata.get(`${name}.${key}`)!)}; mixture-of-experts layers are not supported`);
  const hiddenSize = r.int('embedding_length');
  const numHeads = r.int('attention.head_count');
  if (hiddenSize % numHeads !== 0 && !gguf.metadata.has(`${name}.attention.key_length`))
    r.fail(`${name}.attention.key_length`, `is missing, and the embedding length ${hiddenSize} is not a multiple of the ${numHeads} heads to derive it from`);
  const headDim = r.int('attention.key_length', hiddenSize / numHeads);
  const valueLength = r.int('attention.value_length', headDim);
  if (valueLength !== headDim) throw new UnsupportedError(`${file}: ${name}.attention.value_length ${valueLength} differs from the key length ${headDim}; the engine needs them equal`);
  const ropeDims = r.int('rope.dimension_count', headDim);
  if (ropeDims !== headDim && arch !== 'phi3')
    throw new UnsupportedError(`${file}: ${name}.rope.dimension_count ${ropeDims} rotates only part of each ${headDim}-wide head; the engine does that for phi3 only`);
  if (ropeDims > headDim || ropeDims % 2 !== 0)
    r.fail(`${name}.rope.dimension_count`, `must be even and at most the head dim ${headDim}, not ${ropeDims}`);
  const ropeTheta = r.num('rope.freq_base', 10000);

  let ropeScaling: RopeScaling = { type: 'none' };
  const scalingType = metaString(gguf, `${name}.rope.scaling.type`) ?? 'none';
  if (scalingType === 'linear') ropeScaling = { type: 'linear', factor: r.num('rope.scaling.factor') };
  else if (scalingType !== 'none')
    throw new UnsupportedError(`${file}: RoPE scaling '${scalingType}' (${name}.rope.scaling.type) is not supported; diffuse supports none, linear and Llama-3's`);
  else if (gguf.metadata.has(`${name}.rope.scale_linear`)) ropeScaling = { type: 'linear', factor: r.num('rope.scale_linear') };
  if (gguf.ropeFreqs) {
    if (ropeScaling.type !== 'none') throw new UnsupportedError(`${file}: has both ${ropeScaling.type} RoPE scaling and per-frequency factors (rope_freqs.weight); the engine applies one or the other`);
    if (gguf.ropeFreqs.length !== headDim / 2)
      throw new ModelFormatError(file, "tensor 'rope_freqs.weight'", `has ${gguf.ropeFreqs.length} values; a head of ${headDim} needs ${headDim / 2}`);
    if (!gguf.ropeFreqs.every((v) => Number.isFinite(v) && v > 0)) throw new ModelFormatError(file, "tensor 'rope_freqs.weight'", 'holds values that are not positive and finite');
    if (gguf.ropeFreqs.some((v) => v !== 1)) {
      const fitted = llama3ScalingFromRopeFreqs(gguf.ropeFreqs, ropeTheta, headDim);
      if (!fitted)
        throw new UnsupportedError(`${file}: rope_freqs.weight holds per-frequency RoPE factors that are not Llama-3's scaling; the engine supports none, linear and llama3`);
      ropeScaling = fitted;
    }
  }

  const tokens = metaArray(gguf, 'tokenizer.ggml.tokens');
  let vocabSize: number;
  if (tokens) {
    if (tokens.length === 0) throw new ModelFormatError(file, 'tokenizer.ggml.tokens', 'is empty');
    vocabSize = tokens.length;
  } else {
    if (!gguf.metadata.has(`${name}.vocab_size`)) throw new ModelFormatError(file, 'tokenizer.ggml.tokens', `is missing (and so is ${name}.vocab_size); the vocabulary size cannot be known`);
    vocabSize = r.int('vocab_size');
  }

  // Phi-3's LongRoPE: llama.cpp's converter writes the factors as tensors, the original context
  // and the attention factor as metadata.
  if (gguf.ropeFactorsLong || gguf.ropeFactorsShort) {
    if (arch !== 'phi3') throw new UnsupportedError(`${file}: has LongRoPE factor tensors (rope_factors_*) in a '${name}' model; the engine reads them for phi3 only`);
    if (ropeScaling.type !== 'none' || gguf.ropeFreqs) throw new UnsupportedError(`${file}: has LongRoPE factors and another RoPE scaling; the engine applies one`);
    for (const [tensor, v] of [['rope_factors_long.weight', gguf.ropeFactorsLong], ['rope_factors_short.weight', gguf.ropeFactorsShort]] as const) {
      if (!v) throw new ModelFormatError(file, `tensor '${tensor}'`, 'is missing; LongRoPE needs both the long and the short factors');
      if (v.length !== ropeDims / 2) throw new ModelFormatError(file, `tensor '${tensor}'`, `has ${v.length} values; ${ropeDims} rotary dims need ${ropeDims / 2}`);
      if (!v.every((x) => Number.isFinite(x) && x > 0)) throw new ModelFormatError(file, `tensor '${tensor}'`, 'holds values that are not positive and finite');
    }
    ropeScaling = {
      type: 'longrope',
      shortFactor: Array.from(gguf.ropeFactorsShort!),
      longFactor: Array.from(gguf.ropeFactorsLong!),
      originalMaxPositionEmbeddings: r.int('rope.scaling.original_context_length'),
      attentionFactor: r.num('rope.scaling.attn_factor', 1),
    };
  }

  const config: EngineConfig = {
    hiddenSize,
    intermediateSize: r.int('feed_forward_length'),
    numLayers: r.int('block_count'),
    numHeads,
    numKvHeads: r.int('attention.head_count_kv', numHeads),
    headDim,
    vocabSize,
    rmsNormEps: r.num('attention.layer_norm_rms_epsilon'),
    ropeTheta,
    ropeScaling,
    tieWordEmbeddings: !gguf.tensors.some((t) => t.name === 'output.weight'),
    attentionBias: arch === 'qwen2',
  };
  if (ropeDims !== headDim) config.rotaryDim = ropeDims;
  Object.assign(config, ggufFamilySwitches(gguf, r, name, arch, config));
  return checkEngineConfig(config, file);
}

/**
 * The family switches of a GGUF model, as llama.cpp's graph for its architecture reads them
 * (src/models/<arch>.cpp): Gemma's GeGLU and √d scale (its norms are already 1 + w in the
 * file), Gemma 2's soft-caps (defaults 50 and 30) and windowed even layers (window 4096 by
 * default), Gemma 3's window pattern of 6 and local RoPE base, Qwen3's and Gemma 3's q/k norms,
 * and the query scale llama.cpp gives Gemma 2/3 (1/√head_dim, or 1/√(hidden/heads) for the 27B
 * models, which stands in for query_pre_attn_scalar).
 */
function ggufFamilySwitches(gguf: GgufFile, r: GgufReader, name: string, arch: Architecture, c: EngineConfig): Partial<EngineConfig> {
  const out: Partial<EngineConfig> = {};
  const num = (key: string): number | undefined => {
    const v = gguf.metadata.get(`${name}.${key}`);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) r.fail(`${name}.${key}`, `must be a non-negative number, not ${describeValue(v)}`);
    return v;
  };
  const pattern = (period: number): EngineConfig['layerTypes'] => {
    const v = gguf.metadata.get(`${name}.attention.sliding_window_pattern`);
    if (Array.isArray(v)) {
      if (v.length !== c.numLayers) r.fail(`${name}.attention.sliding_window_pattern`, `must name ${c.numLayers} layers, not ${v.length}`);
      return v.map((w) => (w ? 'sliding_attention' : 'full_attention'));
    }
    const n = typeof v === 'number' ? v : period;
    // llama.cpp's set_swa_pattern: layer il is windowed when il % n < n - 1 (n = 0: all of them).
    return Array.from({ length: c.numLayers }, (_, il) => (n === 0 || il % n < n - 1 ? 'sliding_attention' : 'full_attention'));
  };
  const window = num('attention.sliding_window') ?? 0;
  if (!Number.isSafeInteger(window)) r.fail(`${name}.attention.sliding_window`, `must be an integer, not ${window}`);
  const gemma = arch === 'gemma' || arch === 'gemma2' || arch === 'gemma3_text';
  if (gemma) {
    out.activation = 'gelu_tanh';
    out.embeddingScale = Math.fround(Math.sqrt(c.hiddenSize));
  }
  if (arch === 'gemma2' || arch === 'gemma3_text') {
    out.sandwichNorms = true;
    const big = arch === 'gemma2' ? c.numLayers === 46 : c.numLayers === 62;
    out.attentionScale = 1 / Math.sqrt(big ? Math.floor(c.hiddenSize / c.numHeads) : c.headDim);
    out.finalLogitSoftcap = num('final_logit_softcapping') ?? (arch === 'gemma2' ? 30 : 0);
    if (arch === 'gemma2') out.attnLogitSoftcap = num('attn_logit_softcapping') ?? 50;
    const w = arch === 'gemma2' ? window || 4096 : window;
    if (w > 0) {
      out.slidingWindow = w;
      out.layerTypes = pattern(arch === 'gemma2' ? 2 : 6);
      const local = num('rope.freq_base_swa');
      if (local !== undefined && local > 0) out.localRopeTheta = local;
    }
  } else if (window > 0) {
    out.slidingWindow = window;
    if (gguf.metadata.has(`${name}.attention.sliding_window_pattern`)) out.layerTypes = pattern(0);
  }
  if (arch === 'qwen3' || arch === 'gemma3_text') out.qkNorm = true;
  if (arch === 'phi3') out.fusedProjections = true;
  const attnFactor = num('rope.scaling.attn_factor');
  if (attnFactor !== undefined && attnFactor !== 1 && c.ropeScaling?.type !== 'longrope')
    throw new UnsupportedError(`${gguf.path}: ${name}.rope.scaling.attn_factor ${attnFactor} is not supported without LongRoPE factors; the engine scales RoPE's cos/sin for longrope only`);
  if (out.layerTypes && !out.layerTypes.includes('sliding_attention')) {
    delete out.slidingWindow;
    delete out.layerTypes;
    delete out.localRopeTheta;
  } else if (out.layerTypes?.every((t) => t === 'sliding_attention')) delete out.layerTypes;
  if (!out.attnLogitSoftcap) delete out.attnLogitSoftcap;
  if (!out.finalLogitSoftcap) delete out.finalLogitSoftcap;
  return out;
}
