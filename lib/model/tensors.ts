/**
 * The engine's weight list (TensorSource[], under Hugging Face names) from a GGUF file or a
 * Hugging Face directory, and `loadModelSpec(path)`, which goes from a path on disk to the
 * config and that list.
 *
 * GGUF names map to HF ones (token_embd → model.embed_tokens, blk.N.attn_q → …q_proj, …) and
 * GGUF dims, innermost first, are reversed into HF shapes ([out, in]). llama.cpp's converter
 * interleaves the rows of Q and K in every head for ggml's RoPE (LlamaModel.permute:
 * (j, i) → (i, j) for j ∈ {0, 1}, i < head_dim/2); the sources ask the engine to undo that, with
 * the number of heads of each (numHeads for Q, numKvHeads for K).
 * Every tensor the config calls for is checked here — present, of the right shape, of a type
 * the engine can widen — so the engine's own checks are a second line, not the first.
 */
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';

import { ModelFormatError, NotFoundError, UnsupportedError } from '../errors.js';
import { ggmlTypes, readGguf, supportedTensorTypes, type GgufFile, type GgufTensorInfo } from '../formats/gguf.js';
import { readHfDirectory, type HfDirectory } from '../formats/hf-directory.js';
import { safetensorsDtypeBytes, safetensorsLoadableDtypes } from '../formats/safetensors.js';
import type { EngineConfig, TensorSource } from '../native.js';
import { engineConfigFromGguf, engineConfigFromHf, ggufArchitecture } from './config.js';

export interface ExpectedTensor {
  /** Hugging Face name. */
  name: string;
  /** Outermost first. */
  shape: number[];
  /** For Q and K: the heads whose rows GGUF's llama converter interleaves. */
  ropeHeads?: number;
}

const attention = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
const mlp = ['gate_proj', 'up_proj', 'down_proj'] as const;

/** Every weight the engine loads for `config`, in a stable order, with its HF shape. */
export function expectedTensors(config: EngineConfig): ExpectedTensor[] {
  const d = config.hiddenSize;
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  const I = config.intermediateSize;
  const out: ExpectedTensor[] = [{ name: 'model.embed_tokens.weight', shape: [config.vocabSize, d] }];
  const linear: Record<string, { shape: number[]; ropeHeads?: number }> = {
    q_proj: { shape: [q, d], ropeHeads: config.numHeads },
    k_proj: { shape: [kv, d], ropeHeads: config.numKvHeads },
    v_proj: { shape: [kv, d] },
    o_proj: { shape: [d, q] },
    gate_proj: { shape: [I, d] },
    up_proj: { shape: [I, d] },
    down_proj: { shape: [d, I] },
  };
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    out.push({ name: `${p}input_layernorm.weight`, shape: [d] });
    for (const m of attention) {
      out.push({ name: `${p}self_attn.${m}.weight`, ...linear[m] });
      if (config.attentionBias && m !== 'o_proj') out.push({ name: `${p}self_attn.${m}.bias`, shape: [linear[m].shape[0]] });
    }
    if (config.qkNorm) for (const n of ['q_norm', 'k_norm']) out.push({ name: `${p}self_attn.${n}.weight`, shape: [config.headDim] });
    out.push({ name: `${p}post_attention_layernorm.weight`, shape: [d] });
    // Gemma 2/3: post_attention_layernorm normalises the attention output; these two wrap the MLP.
    if (config.sandwichNorms) for (const n of ['pre_feedforward_layernorm', 'post_feedforward_layernorm']) out.push({ name: `${p}${n}.weight`, shape: [d] });
    for (const m of mlp) out.push({ name: `${p}mlp.${m}.weight`, ...linear[m] });
  }
  out.push({ name: 'model.norm.weight', shape: [d] });
  if (!config.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [config.vocabSize, d] });
  return out;
}

const ggufLayerNames: Record<string, string> = {
  input_layernorm: 'attn_norm',
  'self_attn.q_proj': 'attn_q',
  'self_attn.k_proj': 'attn_k',
  'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output',
  'self_attn.q_norm': 'attn_q_norm',
  'self_attn.k_norm': 'attn_k_norm',
  post_attention_layernorm: 'ffn_norm',
  'mlp.gate_proj': 'ffn_gate',
  'mlp.up_proj': 'ffn_up',
  'mlp.down_proj': 'ffn_down',
};
// Gemma 2/3 (sandwich norms): llama.cpp's ATTN_POST_NORM, FFN_PRE_NORM and FFN_POST_NORM.
const ggufSandwichNames: Record<string, string> = {
  ...ggufLayerNames,
  post_attention_layernorm: 'post_attention_norm',
  pre_feedforward_layernorm: 'ffn_norm',
  post_feedforward_layernorm: 'post_ffw_norm',
};
const ggufGlobalNames: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
};
const invert = (names: Record<string, string>) => Object.fromEntries(Object.entries(names).map(([hf, g]) => [g, hf]));
const hfLayerNames = invert(ggufLayerNames);
const hfSandwichNames = invert(ggufSandwichNames);
const hfGlobalNames = invert(ggufGlobalNames);

/**
 * The GGUF name of a Hugging Face tensor name (llama.cpp's tensor map), or undefined.
 * `sandwichNorms` (Gemma 2/3) maps the norms around the MLP as llama.cpp names them there.
 */
export function ggufTensorName(hfName: string, sandwichNorms = false): string | undefined {
  if (hfName in ggufGlobalNames) return ggufGlobalNames[hfName];
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hfName);
  const g = m && (sandwichNorms ? ggufSandwichNames : ggufLayerNames)[m[2]];
  return g ? `blk.${m[1]}.${g}.${m[3]}` : undefined;
}

/** The Hugging Face name of a GGUF tensor name, or undefined. */
export function hfTensorName(ggufName: string, sandwichNorms = false): string | undefined {
  if (ggufName in hfGlobalNames) return hfGlobalNames[ggufName];
  const m = /^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$/.exec(ggufName);
  const hf = m && (sandwichNorms ? hfSandwichNames : hfLayerNames)[m[2]];
  return hf ? `model.layers.${m[1]}.${hf}.${m[3]}` : undefined;
}

/**
 * Where a split projection lives in a fused checkpoint (Phi-3): q/k/v are row blocks of
 * self_attn.qkv_proj ([q; k; v]), gate/up of mlp.gate_up_proj ([gate; up]). Undefined for
 * the other tensors.
 */
function fusedPart(config: EngineConfig, name: string): { hf: string; gguf: string; shape: number[]; row: number } | undefined {
  const m = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(q|k|v|gate|up)_proj\.weight$/.exec(name);
  if (!config.fusedProjections || !m) return undefined;
  const d = config.hiddenSize, q = config.numHeads * config.headDim, kv = config.numKvHeads * config.headDim, I = config.intermediateSize;
  const row = { q: 0, k: q, v: q + kv, gate: 0, up: I }[m[3]]!;
  return m[2] === 'self_attn'
    ? { hf: `model.layers.${m[1]}.self_attn.qkv_proj.weight`, gguf: `blk.${m[1]}.attn_qkv.weight`, shape: [q + 2 * kv, d], row }
    : { hf: `model.layers.${m[1]}.mlp.gate_up_proj.weight`, gguf: `blk.${m[1]}.ffn_up.weight`, shape: [2 * I, d], row };
}

function shapeText(shape: number[]): string {
  return `[${shape.join(', ')}]`;
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** TensorSources for a GGUF file whose config came from engineConfigFromGguf. */
export function tensorSourcesFromGguf(gguf: GgufFile, config: EngineConfig): TensorSource[] {
  const { permutedQk } = ggufArchitecture(gguf);
  const byName = new Map<string, GgufTensorInfo>(gguf.tensors.map((t) => [t.name, t]));
  return expectedTensors(config).map((e) => {
    const fused = fusedPart(config, e.name);
    const gName = fused ? fused.gguf : ggufTensorName(e.name, config.sandwichNorms)!;
    const t = byName.get(gName);
    if (!t) throw new ModelFormatError(gguf.path, `tensor '${gName}'`, `is missing; the model config calls for it (as ${fused ? fused.hf : e.name} ${shapeText(fused?.shape ?? e.shape)})`);
    const shape = t.dims.slice().reverse();
    if (!sameShape(shape, fused?.shape ?? e.shape))
      throw new ModelFormatError(gguf.path, `tensor '${gName}'`, `has shape ${shapeText(shape)} (GGUF dims ${shapeText(t.dims)}) but the config needs ${shapeText(fused?.shape ?? e.shape)}`);
    if (!supportedTensorTypes.has(t.type))
      throw new UnsupportedError(
        `${gguf.path}: tensor '${gName}' is stored as ${t.type}, which the engine cannot widen (it reads ${[...supportedTensorTypes].join(', ')}); use a GGUF quantised to one of those`,
      );
    // A row block of a fused tensor starts whole rows in: rows of whole blocks in every type.
    const info = Object.values(ggmlTypes).find((g) => g.name === t.type)!;
    const offset = t.offset + (fused ? (fused.row * (e.shape[1] / info.blockValues) * info.blockBytes) : 0);
    const source: TensorSource = { name: e.name, shape: e.shape.slice(), file: gguf.path, offset, dtype: t.type };
    if (permutedQk && e.ropeHeads) source.unpermuteHeads = e.ropeHeads;
    return source;
  });
}

/** TensorSources for a Hugging Face directory whose config came from engineConfigFromHf. */
export function tensorSourcesFromHf(dir: HfDirectory, config: EngineConfig): TensorSource[] {
  return expectedTensors(config).map((e) => {
    const fused = fusedPart(config, e.name);
    const name = fused ? fused.hf : e.name;
    const t = dir.tensors.get(name);
    if (!t) {
      const hint = name === 'lm_head.weight' ? ' (config.json says tie_word_embeddings is false, so the model needs its own LM head)' : '';
      throw new ModelFormatError(dir.weightFiles.length === 1 ? dir.weightFiles[0] : dir.dir, `tensor '${name}'`, `is missing from the weights${hint}`);
    }
    if (!sameShape(t.shape, fused?.shape ?? e.shape))
      throw new ModelFormatError(t.file, `tensor '${name}'`, `has shape ${shapeText(t.shape)} but ${dir.configPath} calls for ${shapeText(fused?.shape ?? e.shape)}`);
    if (!safetensorsLoadableDtypes.has(t.dtype))
      throw new UnsupportedError(`${t.file}: tensor '${name}' has dtype ${t.dtype}, which the engine cannot load (it reads F32, F16 and BF16); save the model in one of those`);
    const offset = t.offset + (fused ? fused.row * e.shape[1] * safetensorsDtypeBytes[t.dtype] : 0);
    return { name: e.name, shape: e.shape.slice(), file: t.file, offset, dtype: t.dtype };
  });
}

export interface ModelSpec {
  format: 'gguf' | 'hf';
  /** The GGUF file or the Hugging Face directory. */
  path: string;
  config: EngineConfig;
  tensors: TensorSource[];
  gguf?: GgufFile;
  hf?: HfDirectory;
}

/**
 * The config and weight list of a model on disk: a GGUF file, a Hugging Face directory, or a
 * file inside one (config.json or a .safetensors file: its directory is used).
 */
export async function loadModelSpec(path: string): Promise<ModelSpec> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new NotFoundError(`${path}: no such file or directory; give a GGUF file or a Hugging Face model directory`);
  if (info.isDirectory()) {
    const hf = await readHfDirectory(path);
    const config = engineConfigFromHf(hf.config, hf.configPath);
    return { format: 'hf', path, config, tensors: tensorSourcesFromHf(hf, config), hf };
  }
  if (/(^|[\\/])config\.json$|\.safetensors(\.index\.json)?$/.test(path)) return loadModelSpec(dirname(path));
  const gguf = await readGguf(path);
  const config = engineConfigFromGguf(gguf);
  return { format: 'gguf', path, config, tensors: tensorSourcesFromGguf(gguf, config), gguf };
}
