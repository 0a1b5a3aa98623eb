/**
 * Merging a LoRA adapter into its base model, exported as a Hugging Face directory that
 * transformers (AutoModelForCausalLM / AutoTokenizer) and diffuse both load:
 *
 *   config.json              the base's (an HF base), or written from the GGUF's metadata
 *   model.safetensors        W' = W + (α/r)·B·A on adapted projections, every other tensor as is,
 *                            all stored F32 or BF16 as asked; a fused checkpoint (Phi-3) keeps
 *                            its qkv_proj / gate_up_proj, the update applied to the fused matrix
 *   tokenizer files          copied from an HF base; from a GGUF, tokenizer.json and
 *                            tokenizer_config.json (with the chat template) built from its metadata
 *
 * Base weights are widened to f32 (quantised GGUF tensors by the addon's dequantizer) and GGUF's
 * Q/K row interleaving for ggml's RoPE is undone, so the merged model is in Hugging Face's
 * layout. Tensors are produced one at a time while the file is written.
 */
import { copyFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { InvalidArgumentError, UnsupportedError } from '../errors.js';
import { ggmlTypes, metaNumber, metaString, type GgufFile } from '../formats/gguf.js';
import { openRegularFile, readAt } from '../formats/open-file.js';
import { makeDirectory, writeTextAtomically } from '../atomic-write.js';
import { writeSafetensors, type SafetensorsWriteDtype } from '../formats/safetensors-writer.js';
import { ggufArchitecture } from '../model/config.js';
import { loadModelSpec, type ModelSpec } from '../model/tensors.js';
import { native, type EngineConfig, type TensorSource } from '../native.js';
import { tokenizerSpecFromGguf } from '../tokenizer/index.js';
import { canonicalKey, readAdapterWeights, type AdapterWeights } from './peft.js';
import { refuseNonFinite } from './tensor-file.js';
import { allLoraModules, type LoraModule } from '../model/adapter.js';

/** How an adapter is merged: the dtype of the merged weights, and overwriting. */
export interface MergeOptions {
  /** How every tensor of the merged model is stored (default F32; BF16 halves the size). */
  dtype?: 'F32' | 'BF16';
  /** Called after each tensor is written, for progress. */
  onTensor?: (done: number, total: number, name: string) => void;
  /** Called for each thing worth knowing that does not stop the merge. */
  warn?: (message: string) => void;
}

/** What mergeAdapter wrote. */
export interface MergeResult {
  dir: string;
  /** The files written, relative to `dir`. */
  files: string[];
  /** Weight tensors written, and how many of them carry an adapter's update. */
  tensors: number;
  merged: number;
}

/** Files of an HF model directory the tokenizer (and generation defaults) come from. */
const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'chat_template.jinja',
  'chat_template.json',
  'generation_config.json',
];

const plainBytes: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };

/** Bytes `count` values of a storage type occupy (GGUF block types included). */
function storageBytes(dtype: string, count: number): number {
  if (dtype in plainBytes) return count * plainBytes[dtype];
  const t = Object.values(ggmlTypes).find((x) => x.name === dtype);
  if (!t) throw new UnsupportedError(`tensors stored as ${dtype} cannot be read for a merge`);
  return (count / t.blockValues) * t.blockBytes;
}

/**
 * GGUF's llama converter stores Q and K with each head's rows interleaved for ggml's RoPE:
 * GGUF row h·d + 2i + j holds Hugging Face row h·d + j·d/2 + i (j ∈ {0, 1}, i < d/2). This puts
 * them back.
 */
export function unpermuteRows(values: Float32Array, heads: number, columns: number): Float32Array {
  const rows = values.length / columns;
  const headDim = rows / heads;
  const half = headDim / 2;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++) {
        const from = (h * headDim + 2 * i + j) * columns;
        const to = (h * headDim + j * half + i) * columns;
        out.set(values.subarray(from, from + columns), to);
      }
  return out;
}

/** One base tensor, widened to f32 in Hugging Face's layout. */
async function readBaseTensor(source: TensorSource): Promise<Float32Array> {
  const count = source.shape.reduce((a, b) => a * b, 1);
  let values: Float32Array;
  if ('data' in source) values = Float32Array.from(source.data);
  else if ('file' in source) {
    const { handle } = await openRegularFile(source.file, 'weight file');
    try {
      values = native().dequantize(source.dtype, await readAt(handle, source.offset, storageBytes(source.dtype, count)), count);
      refuseNonFinite(values, source.file, source.name, 'the base model file is damaged; re-download or re-convert it');
    } finally {
      await handle.close();
    }
  } else throw new UnsupportedError(`${source.name} has no stored values (a random-weight model cannot be merged)`);
  return source.unpermuteHeads ? unpermuteRows(values, source.unpermuteHeads, source.shape[source.shape.length - 1]) : values;
}

const PROJECTION = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.weight$/;

/** W + (α/r)·B·A for the adapted projection `name`, or undefined when the adapter leaves it alone. */
function mergedProjection(name: string, base: Float32Array, shape: number[], adapter: AdapterWeights): Float32Array | undefined {
  const m = PROJECTION.exec(name);
  if (!m || !(allLoraModules as readonly string[]).includes(m[2])) return undefined;
  const A = adapter.tensors.get(canonicalKey(Number(m[1]), m[2] as LoraModule, 'A'));
  const B = adapter.tensors.get(canonicalKey(Number(m[1]), m[2] as LoraModule, 'B'));
  if (!A || !B) return undefined;
  const { rank, alpha } = adapter.config;
  const scale = alpha / rank;
  const scaledB = Float32Array.from(B, (x) => x * scale);
  return native().gemm('nn', shape[0], shape[1], rank, scaledB, A, base);
}

/** A tensor of the merged model: its name and shape, and the base tensors it is made of. */
interface OutputTensor {
  name: string;
  shape: number[];
  parts: TensorSource[];
}

/**
 * The merged model's tensors. The engine's sources are split projections; a fused checkpoint
 * (Phi-3) gets its q/k/v rows back as self_attn.qkv_proj ([q; k; v]) and its gate/up rows as
 * mlp.gate_up_proj ([gate; up]), the names and layout transformers' Phi-3 loads, and the
 * adapter's update on those fused layers applies to the whole fused matrix.
 */
function outputTensors(spec: ModelSpec): OutputTensor[] {
  if (!spec.config.fusedProjections) return spec.tensors.map((t) => ({ name: t.name, shape: t.shape, parts: [t] }));
  const byName = new Map(spec.tensors.map((t) => [t.name, t]));
  const fused: Record<string, { into: string; parts: string[] }> = {
    q_proj: { into: 'qkv_proj', parts: ['q_proj', 'k_proj', 'v_proj'] },
    gate_proj: { into: 'gate_up_proj', parts: ['gate_proj', 'up_proj'] },
  };
  const out: OutputTensor[] = [];
  for (const t of spec.tensors) {
    const m = PROJECTION.exec(t.name);
    if (m && ['k_proj', 'v_proj', 'up_proj'].includes(m[2])) continue;
    const f = m ? fused[m[2]] : undefined;
    if (!f) {
      out.push({ name: t.name, shape: t.shape, parts: [t] });
      continue;
    }
    const parts = f.parts.map((p) => byName.get(t.name.replace(`.${m![2]}.`, `.${p}.`))!);
    out.push({ name: t.name.replace(`.${m![2]}.`, `.${f.into}.`), shape: [parts.reduce((rows, p) => rows + p.shape[0], 0), t.shape[1]], parts });
  }
  return out;
}

/** An output tensor's base values: its parts read and stacked by rows. */
async function readOutputBase(t: OutputTensor): Promise<Float32Array> {
  if (t.parts.length === 1) return readBaseTensor(t.parts[0]);
  const values = new Float32Array(t.shape[0] * t.shape[1]);
  let at = 0;
  for (const part of t.parts) {
    const v = await readBaseTensor(part);
    values.set(v, at);
    at += v.length;
  }
  return values;
}

/** The shortest decimal that is the same f32 as `v` (GGUF stores 1e-5 as 9.99999975e-6). */
export function shortestF32(v: number): number {
  for (let digits = 1; digits < 17; digits++) {
    const x = Number(v.toPrecision(digits));
    if (Math.fround(x) === Math.fround(v)) return x;
  }
  return v;
}

/** config.json for a model read from GGUF, in the layout transformers writes for its architecture. */
export function hfConfigFromGguf(gguf: GgufFile, config: EngineConfig, dtype: SafetensorsWriteDtype): Record<string, unknown> {
  const { name, arch } = ggufArchitecture(gguf);
  if (arch !== 'llama' && arch !== 'mistral' && arch !== 'qwen2' && arch !== 'phi3')
    throw new UnsupportedError(`${gguf.path}: writing a merged Hugging Face directory from a '${name}' GGUF is not supported; merge into the model's Hugging Face directory instead`);
  const s = config.ropeScaling;
  const ropeScaling =
    !s || s.type === 'none'
      ? null
      : s.type === 'linear'
        ? { rope_type: 'linear', factor: shortestF32(s.factor ?? 1) }
        : s.type === 'longrope'
          ? // The GGUF's attention factor written out, which transformers then uses as given.
            { rope_type: 'longrope', short_factor: s.shortFactor!.map(shortestF32), long_factor: s.longFactor!.map(shortestF32), attention_factor: shortestF32(s.attentionFactor ?? 1) }
          : {
              rope_type: 'llama3',
              factor: shortestF32(s.factor ?? 1),
              low_freq_factor: shortestF32(s.lowFreqFactor ?? 1),
              high_freq_factor: shortestF32(s.highFreqFactor ?? 4),
              original_max_position_embeddings: s.originalMaxPositionEmbeddings,
            };
  const token = (key: string) => {
    const v = gguf.metadata.get(`tokenizer.ggml.${key}`);
    return typeof v === 'number' ? v : null;
  };
  const maxPositions = metaNumber(gguf, `${name}.context_length`, 2048);
  // Phi-3: its window (none when the converter wrote 0), the original context LongRoPE and
  // Phi3Config read at the top level, and the partial rotary factor.
  const phi3 =
    arch === 'phi3'
      ? {
          sliding_window: config.slidingWindow ?? null,
          original_max_position_embeddings: s?.type === 'longrope' ? s.originalMaxPositionEmbeddings : maxPositions,
          ...(config.rotaryDim ? { partial_rotary_factor: config.rotaryDim / config.headDim } : {}),
          resid_pdrop: 0,
          embd_pdrop: 0,
        }
      : {};
  return {
    architectures: [arch === 'qwen2' ? 'Qwen2ForCausalLM' : arch === 'mistral' ? 'MistralForCausalLM' : arch === 'phi3' ? 'Phi3ForCausalLM' : 'LlamaForCausalLM'],
    model_type: arch,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: maxPositions,
    rms_norm_eps: shortestF32(config.rmsNormEps),
    rope_theta: shortestF32(config.ropeTheta),
    rope_scaling: ropeScaling,
    tie_word_embeddings: config.tieWordEmbeddings,
    hidden_act: 'silu',
    ...(arch === 'qwen2' ? {} : { attention_bias: false, mlp_bias: false }),
    attention_dropout: 0,
    initializer_range: 0.02,
    bos_token_id: token('bos_token_id'),
    eos_token_id: token('eos_token_id'),
    ...(token('padding_token_id') === null ? {} : { pad_token_id: token('padding_token_id') }),
    torch_dtype: dtype === 'BF16' ? 'bfloat16' : 'float32',
    use_cache: true,
    ...phi3,
  };
}

/** tokenizer.json and tokenizer_config.json for a GGUF's tokenizer, as transformers reads them. */
function tokenizerFilesFromGguf(gguf: GgufFile): { json: unknown; config: Record<string, unknown> } {
  const spec = tokenizerSpecFromGguf(gguf);
  const config: Record<string, unknown> = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    clean_up_tokenization_spaces: spec.cleanUpTokenizationSpaces ?? false,
    model_max_length: metaNumber(gguf, `${metaString(gguf, 'general.architecture')}.context_length`, 2048),
  };
  for (const [k, v] of Object.entries(spec.specialTokens)) if (v !== undefined) config[k] = v;
  if (spec.addBosToken !== undefined) config.add_bos_token = spec.addBosToken;
  if (spec.addEosToken !== undefined) config.add_eos_token = spec.addEosToken;
  if (spec.chatTemplate) config.chat_template = spec.chatTemplate.text;
  return { json: spec.json, config };
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeTextAtomically(path, JSON.stringify(value, null, 2) + '\n');
}

/**
 * Merges the PEFT adapter in `adapterDir` into the model at `modelPath` (a GGUF file or an HF
 * directory) and writes the result to `outDir` as a Hugging Face model directory.
 */
export async function mergeAdapter(modelPath: string, adapterDir: string, outDir: string, options: MergeOptions = {}): Promise<MergeResult> {
  const dtype = options.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'BF16') throw new InvalidArgumentError(`merge dtype must be F32 or BF16, not ${String(dtype)}`);
  const spec: ModelSpec = await loadModelSpec(modelPath);
  const out = resolve(outDir);
  const baseDir = spec.format === 'hf' ? resolve(spec.path) : undefined;
  if (baseDir === out) throw new InvalidArgumentError(`the merged model cannot be written over its base (${out}); give another output directory`);
  const adapter = await readAdapterWeights(adapterDir, spec.config, modelPath);
  if (adapter.config.dropout > 0) options.warn?.(`${adapter.config.file}: lora_dropout ${adapter.config.dropout} plays no part in a merge`);
  await makeDirectory(out);

  let merged = 0;
  let done = 0;
  const tensors = outputTensors(spec);
  const total = tensors.length;
  await writeSafetensors(
    join(out, 'model.safetensors'),
    tensors.map((t) => ({
      name: t.name,
      shape: t.shape,
      data: async () => {
        const base = await readOutputBase(t);
        const update = mergedProjection(t.name, base, t.shape, adapter);
        if (update) merged++;
        options.onTensor?.(++done, total, t.name);
        return update ?? base;
      },
    })),
    { dtype, metadata: { format: 'pt' } },
  );

  const files = ['model.safetensors', 'config.json'];
  const torchDtype = dtype === 'BF16' ? 'bfloat16' : 'float32';
  if (spec.format === 'hf') {
    const config: Record<string, unknown> = { ...spec.hf!.config, torch_dtype: torchDtype };
    if ('dtype' in config) config.dtype = torchDtype;
    await writeJson(join(out, 'config.json'), config);
    for (const name of TOKENIZER_FILES) {
      const from = join(baseDir!, name);
      if (!(await stat(from).catch(() => undefined))?.isFile()) continue;
      await copyFile(from, join(out, name));
      files.push(name);
    }
  } else {
    await writeJson(join(out, 'config.json'), hfConfigFromGguf(spec.gguf!, spec.config, dtype));
    const tokenizer = tokenizerFilesFromGguf(spec.gguf!);
    await writeJson(join(out, 'tokenizer.json'), tokenizer.json);
    await writeJson(join(out, 'tokenizer_config.json'), tokenizer.config);
    files.push('tokenizer.json', 'tokenizer_config.json');
  }
  if (merged === 0) options.warn?.(`${adapterDir}: no tensor of ${modelPath} was changed by the adapter`);
  return { dir: out, files, tensors: total, merged };
}
