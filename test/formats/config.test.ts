/** engineConfigFromHf and engineConfigFromGguf: real configs, transformers' defaults, and the errors. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ModelFormatError, UnsupportedError } from '../../lib/errors.js';
import { readGguf } from '../../lib/formats/gguf.js';
import { engineConfigFromGguf, engineConfigFromHf, llama3ScalingFromRopeFreqs } from '../../lib/model/config.js';
import type { EngineConfig } from '../../lib/native.js';
import { makeTinyModel } from '../helpers/tiny-model.js';
import { gguf, llama3RopeFreqs, writeGgufModel, type GgufModelOptions } from '../helpers/write-gguf.js';

// config.json files as published on the Hugging Face hub (trimmed of keys nobody reads).
const smollm2 = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, hidden_act: 'silu', hidden_size: 576, intermediate_size: 1536,
  max_position_embeddings: 8192, model_type: 'llama', num_attention_heads: 9, num_hidden_layers: 30, num_key_value_heads: 3,
  pretraining_tp: 1, rms_norm_eps: 1e-5, rope_interleaved: false, rope_scaling: null, rope_theta: 100000, tie_word_embeddings: true, vocab_size: 49152,
};
const llama32 = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, head_dim: 64, hidden_act: 'silu', hidden_size: 2048, intermediate_size: 8192,
  max_position_embeddings: 131072, mlp_bias: false, model_type: 'llama', num_attention_heads: 32, num_hidden_layers: 16, num_key_value_heads: 8,
  rms_norm_eps: 1e-5, rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0, tie_word_embeddings: true, vocab_size: 128256,
};
const llama2 = {
  architectures: ['LlamaForCausalLM'], hidden_act: 'silu', hidden_size: 4096, intermediate_size: 11008, max_position_embeddings: 4096, model_type: 'llama',
  num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 32, pretraining_tp: 1, rms_norm_eps: 1e-5, rope_scaling: null, tie_word_embeddings: false, vocab_size: 32000,
};
const qwen2 = {
  architectures: ['Qwen2ForCausalLM'], hidden_act: 'silu', hidden_size: 896, intermediate_size: 4864, max_position_embeddings: 32768, max_window_layers: 24,
  model_type: 'qwen2', num_attention_heads: 14, num_hidden_layers: 24, num_key_value_heads: 2, rms_norm_eps: 1e-6, rope_theta: 1000000.0, sliding_window: 32768,
  tie_word_embeddings: true, use_sliding_window: false, vocab_size: 151936,
};
const mistral = {
  architectures: ['MistralForCausalLM'], hidden_act: 'silu', hidden_size: 4096, intermediate_size: 14336, max_position_embeddings: 32768, model_type: 'mistral',
  num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 8, rms_norm_eps: 1e-5, rope_theta: 10000.0, sliding_window: 4096, tie_word_embeddings: false, vocab_size: 32000,
};

const none = { type: 'none' } as const;
const gemma7b = {
  architectures: ['GemmaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 2, eos_token_id: 1, head_dim: 256, hidden_act: 'gelu',
  hidden_activation: null, hidden_size: 3072, initializer_range: 0.02, intermediate_size: 24576, max_position_embeddings: 8192, model_type: 'gemma',
  num_attention_heads: 16, num_hidden_layers: 28, num_key_value_heads: 16, pad_token_id: 0, rms_norm_eps: 1e-6, rope_scaling: null, rope_theta: 10000.0,
  torch_dtype: 'bfloat16', transformers_version: '4.38.0.dev0', use_cache: true, vocab_size: 256000,
};
const gemmaSwitches = { activation: 'gelu_tanh', normWeightOffset: 1 } as const;
const gemma7bEngine: EngineConfig = {
  hiddenSize: 3072, intermediateSize: 24576, numLayers: 28, numHeads: 16, numKvHeads: 16, headDim: 256, vocabSize: 256000, rmsNormEps: 1e-6, ropeTheta: 10000,
  ropeScaling: none, tieWordEmbeddings: true, attentionBias: false, ...gemmaSwitches, embeddingScale: Math.fround(Math.sqrt(3072)),
};
const gemma2_9b = {
  architectures: ['Gemma2ForCausalLM'], attention_bias: false, attention_dropout: 0.0, attn_logit_softcapping: 50.0, bos_token_id: 2, cache_implementation: 'hybrid',
  eos_token_id: 1, final_logit_softcapping: 30.0, head_dim: 256, hidden_act: 'gelu_pytorch_tanh', hidden_activation: 'gelu_pytorch_tanh', hidden_size: 3584,
  initializer_range: 0.02, intermediate_size: 14336, max_position_embeddings: 8192, model_type: 'gemma2', num_attention_heads: 16, num_hidden_layers: 42,
  num_key_value_heads: 8, pad_token_id: 0, query_pre_attn_scalar: 256, rms_norm_eps: 1e-6, rope_theta: 10000.0, sliding_window: 4096, sliding_window_size: 4096,
  torch_dtype: 'float32', use_cache: true, vocab_size: 256000,
};
const alternate = (n: number, period: number) => Array.from({ length: n }, (_, i) => ((i + 1) % period ? 'sliding_attention' : 'full_attention') as 'sliding_attention' | 'full_attention');
const gemma2_9bEngine: EngineConfig = {
  hiddenSize: 3584, intermediateSize: 14336, numLayers: 42, numHeads: 16, numKvHeads: 8, headDim: 256, vocabSize: 256000, rmsNormEps: 1e-6, ropeTheta: 10000,
  ropeScaling: none, tieWordEmbeddings: true, attentionBias: false, ...gemmaSwitches, embeddingScale: Math.fround(Math.sqrt(3584)), sandwichNorms: true,
  attentionScale: 1 / 16, attnLogitSoftcap: 50, finalLogitSoftcap: 30, slidingWindow: 4096, layerTypes: alternate(42, 2),
};
const gemma3_1b = {
  architectures: ['Gemma3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, attn_logit_softcapping: null, bos_token_id: 2, cache_implementation: 'hybrid',
  eos_token_id: [1, 106], final_logit_softcapping: null, head_dim: 256, hidden_activation: 'gelu_pytorch_tanh', hidden_size: 1152, initializer_range: 0.02,
  intermediate_size: 6912, max_position_embeddings: 32768, model_type: 'gemma3_text', num_attention_heads: 4, num_hidden_layers: 26, num_key_value_heads: 1,
  pad_token_id: 0, query_pre_attn_scalar: 256, rms_norm_eps: 1e-6, rope_local_base_freq: 10000, rope_scaling: null, rope_theta: 1000000, sliding_window: 512,
  sliding_window_pattern: 6, torch_dtype: 'bfloat16', use_cache: true, vocab_size: 262144,
};
const gemma3_1bEngine: EngineConfig = {
  hiddenSize: 1152, intermediateSize: 6912, numLayers: 26, numHeads: 4, numKvHeads: 1, headDim: 256, vocabSize: 262144, rmsNormEps: 1e-6, ropeTheta: 1e6,
  ropeScaling: none, tieWordEmbeddings: true, attentionBias: false, ...gemmaSwitches, embeddingScale: Math.fround(Math.sqrt(1152)), sandwichNorms: true,
  attentionScale: 1 / 16, qkNorm: true, slidingWindow: 512, layerTypes: alternate(26, 6), localRopeTheta: 10000,
};
const phi3mini = {
  architectures: ['Phi3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 1, embd_pdrop: 0.0, eos_token_id: 32000, hidden_act: 'silu',
  hidden_size: 3072, initializer_range: 0.02, intermediate_size: 8192, max_position_embeddings: 4096, model_type: 'phi3', num_attention_heads: 32,
  num_hidden_layers: 32, num_key_value_heads: 32, original_max_position_embeddings: 4096, pad_token_id: 32000, resid_pdrop: 0.0, rms_norm_eps: 1e-5,
  rope_scaling: null, rope_theta: 10000.0, sliding_window: 2047, tie_word_embeddings: false, torch_dtype: 'bfloat16', use_cache: true, vocab_size: 32064,
};
// Phi-3.5-mini-instruct and Phi-4-mini-instruct as published (their 48 factors shortened to a
// pattern of the same length; the parse does not depend on the values).
const factors48 = (start: number, step: number) => Array.from({ length: 48 }, (_, i) => start + step * i);
const phi35mini = {
  ...phi3mini, max_position_embeddings: 131072, sliding_window: 262144,
  rope_scaling: { long_factor: factors48(1.08, 1.2), short_factor: factors48(1, 0.05), type: 'longrope' },
};
const phi4mini = {
  architectures: ['Phi3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 199999, embd_pdrop: 0.0, eos_token_id: 199999,
  full_attn_mod: 1, hidden_act: 'silu', hidden_size: 3072, initializer_range: 0.02, intermediate_size: 8192, interpolate_factor: 1, lm_head_bias: false,
  max_position_embeddings: 131072, mlp_bias: false, model_type: 'phi3', num_attention_heads: 24, num_hidden_layers: 32, num_key_value_heads: 8,
  original_max_position_embeddings: 4096, pad_token_id: 199999, partial_rotary_factor: 0.75, resid_pdrop: 0.0, rms_norm_eps: 1e-5,
  rope_scaling: { long_factor: factors48(1, 0.9), short_factor: factors48(1, 0.01), type: 'longrope' }, rope_theta: 10000.0, sliding_window: 262144,
  tie_word_embeddings: true, torch_dtype: 'bfloat16', use_cache: true, vocab_size: 200064,
};
// transformers' default attention factor: sqrt(1 + ln(131072 / 4096) / ln 4096).
const phiAttentionFactor = Math.sqrt(1 + Math.log(32) / Math.log(4096));
const qwen3 = {
  architectures: ['Qwen3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151645, head_dim: 128, hidden_act: 'silu',
  hidden_size: 1024, initializer_range: 0.02, intermediate_size: 3072, max_position_embeddings: 40960, max_window_layers: 28, model_type: 'qwen3',
  num_attention_heads: 16, num_hidden_layers: 28, num_key_value_heads: 8, rms_norm_eps: 1e-6, rope_scaling: null, rope_theta: 1000000, sliding_window: null,
  tie_word_embeddings: true, torch_dtype: 'bfloat16', use_cache: true, use_sliding_window: false, vocab_size: 151936,
};

describe('engineConfigFromHf', () => {
  it.each<[string, object, EngineConfig]>([
    ['SmolLM2-135M', smollm2, { hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3, headDim: 64, vocabSize: 49152, rmsNormEps: 1e-5, ropeTheta: 100000, ropeScaling: none, tieWordEmbeddings: true, attentionBias: false }],
    ['Llama-3.2-1B', llama32, { hiddenSize: 2048, intermediateSize: 8192, numLayers: 16, numHeads: 32, numKvHeads: 8, headDim: 64, vocabSize: 128256, rmsNormEps: 1e-5, ropeTheta: 500000, ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 }, tieWordEmbeddings: true, attentionBias: false }],
    ['Llama-2-7B (no rope_theta: 10000)', llama2, { hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKvHeads: 32, headDim: 128, vocabSize: 32000, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: none, tieWordEmbeddings: false, attentionBias: false }],
    ['Qwen2-0.5B (q/k/v bias)', qwen2, { hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14, numKvHeads: 2, headDim: 64, vocabSize: 151936, rmsNormEps: 1e-6, ropeTheta: 1e6, ropeScaling: none, tieWordEmbeddings: true, attentionBias: true }],
    ['Mistral-7B (its window on every layer)', mistral, { hiddenSize: 4096, intermediateSize: 14336, numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128, vocabSize: 32000, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: none, tieWordEmbeddings: false, attentionBias: false, slidingWindow: 4096 }],
    ['Mistral-7B-v0.2 (sliding_window null: no window)', { ...mistral, sliding_window: null }, { hiddenSize: 4096, intermediateSize: 14336, numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128, vocabSize: 32000, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: none, tieWordEmbeddings: false, attentionBias: false }],
    ['Gemma-7B-it', gemma7b, { ...gemma7bEngine }],
    ['Gemma-2-9B-it', gemma2_9b, { ...gemma2_9bEngine }],
    ['Gemma-3-1B-it', gemma3_1b, { ...gemma3_1bEngine }],
    ['Phi-3-mini-4k-instruct (fused projections, a window of 2047)', phi3mini, { hiddenSize: 3072, intermediateSize: 8192, numLayers: 32, numHeads: 32, numKvHeads: 32, headDim: 96, vocabSize: 32064, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: none, tieWordEmbeddings: false, attentionBias: false, fusedProjections: true, slidingWindow: 2047 }],
    ['Phi-3.5-mini-instruct (LongRoPE)', phi35mini, {
      hiddenSize: 3072, intermediateSize: 8192, numLayers: 32, numHeads: 32, numKvHeads: 32, headDim: 96, vocabSize: 32064, rmsNormEps: 1e-5, ropeTheta: 10000,
      ropeScaling: { type: 'longrope', shortFactor: factors48(1, 0.05), longFactor: factors48(1.08, 1.2), originalMaxPositionEmbeddings: 4096, attentionFactor: phiAttentionFactor },
      tieWordEmbeddings: false, attentionBias: false, fusedProjections: true, slidingWindow: 262144,
    }],
    ['Phi-4-mini-instruct (LongRoPE on 96 of 128 dims, tied)', phi4mini, {
      hiddenSize: 3072, intermediateSize: 8192, numLayers: 32, numHeads: 24, numKvHeads: 8, headDim: 128, vocabSize: 200064, rmsNormEps: 1e-5, ropeTheta: 10000,
      ropeScaling: { type: 'longrope', shortFactor: factors48(1, 0.01), longFactor: factors48(1, 0.9), originalMaxPositionEmbeddings: 4096, attentionFactor: phiAttentionFactor },
      tieWordEmbeddings: true, attentionBias: false, fusedProjections: true, slidingWindow: 262144, rotaryDim: 96,
    }],
    ['Qwen3-0.6B', qwen3, { hiddenSize: 1024, intermediateSize: 3072, numLayers: 28, numHeads: 16, numKvHeads: 8, headDim: 128, vocabSize: 151936, rmsNormEps: 1e-6, ropeTheta: 1e6, ropeScaling: none, tieWordEmbeddings: true, attentionBias: false, qkNorm: true }],
  ])('%s', (_, json, expected) => {
    expect(engineConfigFromHf(json, 'config.json')).toEqual(expected);
  });

  it("takes transformers' defaults for missing keys, per model type", () => {
    const base = { hidden_act: 'silu' };
    expect(engineConfigFromHf({ ...base, model_type: 'llama' }, 'c.json')).toEqual({
      hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKvHeads: 32, headDim: 128, vocabSize: 32000, rmsNormEps: 1e-6, ropeTheta: 10000, ropeScaling: none, tieWordEmbeddings: false, attentionBias: false,
    });
    expect(engineConfigFromHf({ model_type: 'mistral' }, 'c.json')).toMatchObject({ intermediateSize: 14336, numKvHeads: 8 });
    expect(engineConfigFromHf({ model_type: 'mistral', num_key_value_heads: null }, 'c.json')).toMatchObject({ numKvHeads: 32 });
    expect(engineConfigFromHf({ model_type: 'qwen2' }, 'c.json')).toMatchObject({ vocabSize: 151936, intermediateSize: 22016, numKvHeads: 32, attentionBias: true });
    expect(engineConfigFromHf({ model_type: 'llama', num_attention_heads: 8 }, 'c.json')).toMatchObject({ numKvHeads: 8, headDim: 512 });
  });

  it('reads transformers 5 rope_parameters and linear scaling', () => {
    const v5 = { ...llama32, rope_scaling: undefined, rope_theta: undefined, rope_parameters: { ...llama32.rope_scaling, rope_theta: 500000.0 } };
    expect(engineConfigFromHf(v5, 'c.json')).toEqual(engineConfigFromHf(llama32, 'c.json'));
    expect(engineConfigFromHf({ ...smollm2, rope_scaling: { type: 'linear', factor: 2 } }, 'c.json').ropeScaling).toEqual({ type: 'linear', factor: 2 });
    expect(engineConfigFromHf({ ...smollm2, rope_parameters: { rope_type: 'default', rope_theta: 5e5 } }, 'c.json')).toMatchObject({ ropeTheta: 5e5, ropeScaling: none });
  });

  it("reads LongRoPE as transformers does: su and (for phi3) yarn are longrope; attention_factor, factor and the original context from the config", () => {
    const scaling = (json: object) => engineConfigFromHf(json, 'c.json').ropeScaling;
    const expected = engineConfigFromHf(phi35mini, 'c.json').ropeScaling;
    expect(scaling({ ...phi35mini, rope_scaling: { ...phi35mini.rope_scaling, type: 'su' } })).toEqual(expected);
    expect(scaling({ ...phi35mini, rope_scaling: { ...phi35mini.rope_scaling, type: 'yarn' } })).toEqual(expected);
    // transformers 5's rope_parameters layout, as save_pretrained writes it.
    const { rope_scaling: rs, ...rest } = phi35mini;
    expect(scaling({ ...rest, rope_parameters: { ...rs, rope_type: 'longrope', rope_theta: 10000, original_max_position_embeddings: 4096 } })).toEqual(expected);
    expect(scaling({ ...phi35mini, rope_scaling: { ...phi35mini.rope_scaling, attention_factor: 1.5 } })).toMatchObject({ attentionFactor: 1.5 });
    expect(scaling({ ...phi35mini, rope_scaling: { ...phi35mini.rope_scaling, factor: 4 } })).toMatchObject({ attentionFactor: Math.sqrt(1 + Math.log(4) / Math.log(4096)) });
    // No scaling beyond the original context: an attention factor of 1.
    expect(scaling({ ...phi35mini, max_position_embeddings: 4096 })).toMatchObject({ attentionFactor: 1 });
    // Phi3Config's top-level original_max_position_embeddings wins over the scaling dict's.
    expect(scaling({ ...phi35mini, rope_scaling: { ...phi35mini.rope_scaling, original_max_position_embeddings: 99 } })).toMatchObject({ originalMaxPositionEmbeddings: 4096 });
    // A Llama with longrope (transformers' generic LongRoPE): the dict's original context, else max_position_embeddings.
    const half = (v: number) => Array.from({ length: 32 }, () => v);
    const llamaLong = { ...smollm2, max_position_embeddings: 8192, rope_scaling: { rope_type: 'longrope', short_factor: half(1), long_factor: half(2), original_max_position_embeddings: 2048 } };
    expect(scaling(llamaLong)).toEqual({ type: 'longrope', shortFactor: half(1), longFactor: half(2), originalMaxPositionEmbeddings: 2048, attentionFactor: Math.sqrt(1 + Math.log(4) / Math.log(2048)) });
    expect(scaling({ ...llamaLong, rope_scaling: { ...llamaLong.rope_scaling, original_max_position_embeddings: undefined } })).toMatchObject({ originalMaxPositionEmbeddings: 8192, attentionFactor: 1 });
    // partial_rotary_factor inside rope_parameters wins over the top-level key.
    expect(engineConfigFromHf({ ...phi4mini, partial_rotary_factor: 0.5, rope_scaling: { ...phi4mini.rope_scaling, partial_rotary_factor: 0.75 } }, 'c.json').rotaryDim).toBe(96);
  });

  it("runs a Llama with transformers' tanh-GELU as a GeGLU, as LlamaMLP's ACT2FN does", () => {
    expect(engineConfigFromHf({ ...smollm2, hidden_act: 'gelu_pytorch_tanh' }, 'c.json')).toMatchObject({ activation: 'gelu_tanh' });
    expect(engineConfigFromHf({ ...smollm2, hidden_act: 'gelu_pytorch_tanh' }, 'c.json').normWeightOffset).toBeUndefined();
  });

  it('derives the window layers as transformers does (Qwen2 max_window_layers, explicit layer_types, the Gemma 3 pattern)', () => {
    const q = engineConfigFromHf({ ...qwen2, num_hidden_layers: 4, use_sliding_window: true, sliding_window: 64, max_window_layers: 2 }, 'c.json');
    expect(q).toMatchObject({ slidingWindow: 64, layerTypes: ['full_attention', 'full_attention', 'sliding_attention', 'sliding_attention'] });
    const explicit = ['full_attention', 'sliding_attention', 'full_attention'];
    expect(engineConfigFromHf({ ...gemma2_9b, num_hidden_layers: 3, layer_types: explicit }, 'c.json')).toMatchObject({ layerTypes: explicit });
    expect(engineConfigFromHf({ ...gemma3_1b, num_hidden_layers: 4, sliding_window_pattern: 2 }, 'c.json')).toMatchObject({ layerTypes: alternate(4, 2) });
    // Windows that no layer uses, and layers that all use one, need no per-layer list.
    expect(engineConfigFromHf({ ...gemma2_9b, num_hidden_layers: 2, layer_types: ['full_attention', 'full_attention'] }, 'c.json').slidingWindow).toBeUndefined();
    expect(engineConfigFromHf({ ...qwen2, num_hidden_layers: 2, use_sliding_window: true, max_window_layers: 1, layer_types: ['sliding_attention', 'sliding_attention'] }, 'c.json')).toMatchObject({ slidingWindow: 32768 });
  });

  it('refuses what the engine cannot run, naming it', () => {
    const unsupported: [object, RegExp][] = [
      [{ ...smollm2, model_type: 'phimoe' }, /model_type 'phimoe' is not supported/],
      [{ ...smollm2, partial_rotary_factor: 0.5 }, /partial_rotary_factor 0.5 is not supported for llama/],
      [{ ...qwen3, rope_parameters: { rope_type: 'default', rope_theta: 1e6, partial_rotary_factor: 0.5 } }, /rope_parameters.partial_rotary_factor 0.5 is not supported for qwen3/],
      [{ ...phi3mini, partial_rotary_factor: 0.7 }, /rotates 67 of each 96-wide head; RoPE needs an even/],
      [{ ...smollm2, rope_scaling: { rope_type: 'su', short_factor: [1], long_factor: [1] } }, /RoPE scaling 'su'/],
      [{ ...phi3mini, resid_pdrop: 0.1 }, /resid_pdrop 0.1 is not supported; the engine has no dropout/],
      [{ ...smollm2, model_type: 'gemma3' }, /model_type 'gemma3' is not supported \(a Gemma 3 checkpoint with vision/],
      [{ ...smollm2, attention_dropout: 0.1 }, /attention_dropout 0.1 is not supported; the engine has no dropout/],
      [{ ...smollm2, quantization_config: { quant_method: 'gptq' } }, /quantization_config .* is not supported/],
      [{ ...smollm2, auto_map: { AutoModelForCausalLM: 'x.Y' } }, /auto_map .* \(trust_remote_code\)/],
      [{ ...smollm2, num_local_experts: 8 }, /num_local_experts 8 is not supported; mixture-of-experts/],
      [{ ...gemma7b, use_bidirectional_attention: true }, /use_bidirectional_attention true/],
      [{ ...gemma7b, hidden_act: 'relu' }, /hidden_act 'relu' is not supported/],
      [{ ...gemma2_9b, layer_types: ['chunked_attention', ...alternate(41, 2)] }, /layer_types holds 'chunked_attention'/],
      [{ ...smollm2, sliding_window: 16 }, /sliding_window 16 is not supported; llama attends to the whole sequence/],
      [{ ...qwen3, attention_bias: true }, /attention_bias true is not supported/],
      [{ ...qwen2, layer_types: alternate(24, 2) }, /sliding_attention layers but use_sliding_window is false/],
      [{ ...gemma3_1b, rope_scaling: undefined, rope_parameters: { full_attention: { rope_type: 'default', rope_theta: 1e6 }, sliding_attention: { rope_type: 'linear', factor: 2, rope_theta: 1e4 } } }, /sliding_attention has linear scaling/],
      [{ ...smollm2, model_type: 'gpt2' }, /model_type 'gpt2' is not supported/],
      [{ ...smollm2, hidden_act: 'gelu' }, /hidden_act 'gelu' is not supported/],
      [{ ...smollm2, attention_bias: true }, /attention_bias true is not supported; biases on q, k, v and o/],
      [{ ...smollm2, mlp_bias: true }, /mlp_bias true is not supported/],
      [{ ...smollm2, rope_scaling: { type: 'yarn', factor: 4 } }, /RoPE scaling 'yarn' \(rope_scaling\) is not supported/],
      [{ ...smollm2, rope_scaling: { rope_type: 'dynamic', factor: 2 } }, /RoPE scaling 'dynamic'/],
    ];
    for (const [json, pattern] of unsupported) {
      expect(() => engineConfigFromHf(json, '/m/config.json')).toThrow(UnsupportedError);
      expect(() => engineConfigFromHf(json, '/m/config.json')).toThrow(pattern);
      expect(() => engineConfigFromHf(json, '/m/config.json')).toThrow('/m/config.json');
    }
  });

  it('gives a ModelFormatError naming the key for wrong-typed or impossible values', () => {
    const malformed: [unknown, string, RegExp][] = [
      [[1, 2], '', /must hold a JSON object/],
      [{ ...smollm2, model_type: undefined }, 'model_type', /is missing/],
      [{ ...smollm2, model_type: 7 }, 'model_type', /must be a string/],
      [{ ...smollm2, hidden_size: '576' }, 'hidden_size', /must be a positive integer, not "576"/],
      [{ ...smollm2, num_hidden_layers: 0 }, 'num_hidden_layers', /must be a positive integer, not 0/],
      [{ ...smollm2, num_attention_heads: 2.5 }, 'num_attention_heads', /must be a positive integer/],
      [{ ...smollm2, rms_norm_eps: -1 }, 'rms_norm_eps', /must be a positive number/],
      [{ ...smollm2, tie_word_embeddings: 'yes' }, 'tie_word_embeddings', /must be true or false/],
      [{ ...smollm2, rope_scaling: [] }, 'rope_scaling', /must be an object/],
      [{ ...smollm2, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'rope_scaling.low_freq_factor', /is missing/],
      [{ ...smollm2, rope_scaling: { rope_type: 5 } }, 'rope_scaling.rope_type', /must be a string/],
      [{ ...smollm2, num_key_value_heads: 4 }, 'numKvHeads', /9 attention heads cannot be shared evenly by 4/],
      [{ ...smollm2, head_dim: 63 }, 'headDim', /even head dimension/],
      [{ ...smollm2, num_attention_heads: 7 }, 'head_dim', /not a multiple of the 7 heads/],
      [{ ...smollm2, vocab_size: 2 ** 30 }, 'vocabSize', /below 16777216/],
      [{ ...phi35mini, rope_scaling: { ...phi35mini.rope_scaling, short_factor: [1, 2] } }, 'rope_scaling.short_factor', /has 2 values; the 96 rotary dims .* need 48/],
      [{ ...phi4mini, rope_scaling: { ...phi4mini.rope_scaling, long_factor: factors48(1, 1).concat([1]) } }, 'rope_scaling.long_factor', /has 49 values; the 96 rotary dims/],
      [{ ...phi35mini, rope_scaling: { ...phi35mini.rope_scaling, long_factor: undefined } }, 'rope_scaling.long_factor', /is missing; longrope scaling needs it/],
      [{ ...phi35mini, rope_scaling: { ...phi35mini.rope_scaling, short_factor: factors48(0, 1) } }, 'rope_scaling.short_factor', /must be a list of positive numbers/],
      [{ ...phi3mini, partial_rotary_factor: 'half' }, 'partial_rotary_factor', /must be a number in \(0, 1\]/],
    ];
    for (const [json, field, pattern] of malformed) {
      let error: unknown;
      try {
        engineConfigFromHf(json, '/m/config.json');
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ModelFormatError);
      expect((error as ModelFormatError).file).toBe('/m/config.json');
      expect((error as ModelFormatError).field ?? '').toBe(field);
      expect((error as Error).message).toMatch(pattern);
    }
  });
});

describe('engineConfigFromGguf', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diffuse-cfg-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  let n = 0;
  async function configOf(model = makeTinyModel(), options: GgufModelOptions = {}): Promise<EngineConfig> {
    const path = join(dir, `m${n++}.gguf`);
    await writeGgufModel(path, model, options);
    return engineConfigFromGguf(await readGguf(path));
  }

  /** The config as GGUF stores it: eps and theta are f32. */
  const asStored = (c: EngineConfig): EngineConfig => ({ ...c, rmsNormEps: Math.fround(c.rmsNormEps), ropeTheta: Math.fround(c.ropeTheta) });

  it('reads the shape back from the metadata; tying from the absence of output.weight', async () => {
    for (const options of [{}, { tied: true, kvHeads: 1 }, { heads: 2, kvHeads: 2, headDim: 12, hidden: 20, vocab: 33 }, { bias: true, ropeTheta: 1e6 }]) {
      const model = makeTinyModel(options);
      expect(await configOf(model)).toEqual(asStored(model.config));
    }
  });

  it('recovers linear and Llama-3 RoPE scaling', async () => {
    const linear = makeTinyModel({ ropeScaling: { type: 'linear', factor: 4 } });
    expect((await configOf(linear)).ropeScaling).toEqual({ type: 'linear', factor: 4 });
    const llama3 = makeTinyModel({ headDim: 16, hidden: 64, ropeTheta: 500000, ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } });
    expect(await configOf(llama3)).toEqual(asStored(llama3.config));
  });

  it('fits non-default Llama-3 parameters from the divisors, and refuses divisors that are not Llama-3 scaling', () => {
    const params = { factor: 16, lowFreqFactor: 2, highFreqFactor: 16, originalMaxPositionEmbeddings: 8192 };
    const divisors = llama3RopeFreqs(500000, 128, params);
    const fitted = llama3ScalingFromRopeFreqs(divisors, 500000, 128)!;
    expect(fitted.type).toBe('llama3');
    expect(fitted.factor).toBe(16);
    expect(fitted.lowFreqFactor).toBeCloseTo(2, 3);
    expect(fitted.highFreqFactor).toBeCloseTo(16, 2);
    const scrambled = divisors.slice().reverse();
    expect(llama3ScalingFromRopeFreqs(scrambled, 500000, 128)).toBeUndefined();
  });

  it('names missing and wrong-typed keys', async () => {
    const model = makeTinyModel();
    for (const key of ['llama.block_count', 'llama.embedding_length', 'llama.feed_forward_length', 'llama.attention.head_count', 'llama.attention.layer_norm_rms_epsilon', 'general.architecture']) {
      const error = await configOf(model, { omit: [key] }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelFormatError);
      expect((error as ModelFormatError).field).toBe(key);
      expect((error as Error).message).toMatch(/is missing/);
    }
    const wrong: [Record<string, unknown>, string, RegExp][] = [
      [{ 'llama.block_count': 'two' }, 'llama.block_count', /must be a positive integer, not the string "two"/],
      [{ 'llama.embedding_length': gguf.f32(32.5) }, 'llama.embedding_length', /must be a positive integer/],
      [{ 'llama.attention.head_count_kv': 0 }, 'llama.attention.head_count_kv', /must be a positive integer, not the number 0/],
      [{ 'llama.rope.freq_base': gguf.f32(-1) }, 'llama.rope.freq_base', /must be a positive number/],
      [{ 'llama.feed_forward_length': gguf.u64(2n ** 60n) }, 'llama.feed_forward_length', /must be a positive integer, not the 64-bit integer/],
      [{ 'general.architecture': 3 }, 'general.architecture', /must be a string/],
      [{ 'tokenizer.ggml.tokens': 'abc' }, 'tokenizer.ggml.tokens', /must be an array/],
      [{ 'tokenizer.ggml.tokens': [] }, 'tokenizer.ggml.tokens', /is empty/],
      [{ 'llama.attention.head_count_kv': 3 }, 'numKvHeads', /4 attention heads cannot be shared evenly by 3/],
    ];
    for (const [metadata, field, pattern] of wrong) {
      const error = await configOf(model, { metadata: metadata as GgufModelOptions['metadata'] }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelFormatError);
      expect((error as ModelFormatError).field).toBe(field);
      expect((error as Error).message).toMatch(pattern);
    }
    const noVocab = await configOf(model, { omit: ['tokenizer.ggml.tokens'] }).catch((e: unknown) => e);
    expect((noVocab as Error).message).toMatch(/tokenizer.ggml.tokens: is missing \(and so is llama.vocab_size\)/);
    expect(await configOf(model, { omit: ['tokenizer.ggml.tokens'], metadata: { 'llama.vocab_size': 61 } })).toMatchObject({ vocabSize: 61 });
  });

  it('accepts per-layer arrays when every layer agrees, and refuses them otherwise', async () => {
    const model = makeTinyModel();
    expect(await configOf(model, { metadata: { 'llama.attention.head_count_kv': gguf.array('u32', [2, 2]) } })).toMatchObject({ numKvHeads: 2 });
    await expect(configOf(model, { metadata: { 'llama.attention.head_count_kv': gguf.array('u32', [2, 4]) } })).rejects.toThrow(UnsupportedError);
  });

  it('refuses architectures and features the engine does not have', async () => {
    const model = makeTinyModel();
    const cases: [GgufModelOptions['metadata'], RegExp][] = [
      [{ 'general.architecture': 'phi2' }, /GGUF architecture 'phi2' is not supported/],
      [{ 'llama.rope.scaling.attn_factor': 1.19 }, /attn_factor 1.19.* is not supported/],
      [{ 'llama.expert_count': 8 }, /llama.expert_count is the number 8; mixture-of-experts/],
      [{ 'llama.rope.scaling.type': 'yarn' }, /RoPE scaling 'yarn'/],
      [{ 'llama.rope.dimension_count': 4 }, /rotates only part of each 8-wide head/],
      [{ 'llama.attention.value_length': 16, 'llama.attention.key_length': 8 }, /value_length 16 differs from the key length 8/],
    ];
    for (const [metadata, pattern] of cases) {
      const error = await configOf(model, { metadata }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UnsupportedError);
      expect((error as Error).message).toMatch(pattern);
      expect((error as Error).message).toContain(dir);
    }
    const biased = await configOf(makeTinyModel({ bias: true }), { arch: 'llama' }).catch((e: unknown) => e);
    expect(biased).toBeInstanceOf(UnsupportedError);
    expect((biased as Error).message).toMatch(/attention biases \(blk.0.attn_q.bias\) in a 'llama' model/);
  });
});
