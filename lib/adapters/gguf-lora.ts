/**
 * LoRA adapters in llama.cpp's GGUF format, so llama.cpp, Ollama, node-llama-cpp and LM Studio
 * run what we train (`llama-cli -m base.gguf --lora adapter.gguf`), and we run theirs:
 *
 *   general.architecture = <the base's>   general.type = "adapter"   adapter.type = "lora"
 *   adapter.lora.alpha   = α (f32)        blk.N.<tensor>.weight.lora_a  GGUF dims [in, r]  (PEFT's A [r, in])
 *                                          blk.N.<tensor>.weight.lora_b  GGUF dims [r, out] (PEFT's B [out, r])
 *
 * with <tensor> the base GGUF's name (attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up,
 * ffn_down) and, for an architecture whose converter permutes the Q/K rows of the base weights
 * for ggml's RoPE ('llama'), the rows of lora_b of attn_q and attn_k permuted the same way, as
 * convert_lora_to_gguf.py does. The scale is α / r, as in PEFT. test/fixtures/gguf-lora holds
 * a file llama.cpp's converter wrote (tools/reference/gguf_lora_fixture.py).
 */
import { InvalidArgumentError, ModelFormatError, UnsupportedError } from '../errors.js';
import { metaNumber, metaString, readGguf, type GgufFile } from '../formats/gguf.js';
import { writeGgufFile, type GgufMeta, type GgufTensorOut } from '../formats/gguf-writer.js';
import { openRegularFile, readAt } from '../formats/open-file.js';
import { allLoraModules, type LoraModule } from '../model/adapter.js';
import { native, type EngineConfig } from '../native.js';
import { unpermuteRows } from './merge.js';
import { convertedGgufArchitecture, families, ggufArchitecture } from '../model/config.js';
import type { Adapter } from '../model/adapter.js';
import type { Model } from '../model/model.js';
import { resolveModel } from '../model/resolve.js';
import { loadModelSpec } from '../model/tensors.js';
import { adapterFromWeights, canonicalKey, projectionShapes, type AdapterWeights, type LoadAdapterOptions } from './peft.js';

/**
 * The base GGUF tensor each module adapts. Phi-3's fused layers are llama.cpp's attn_qkv and
 * ffn_up (which holds gate and up there); `ggufLoraModule` tells the two ffn_up apart.
 */
export const ggufLoraNames: Record<LoraModule, string> = {
  q_proj: 'attn_q',
  k_proj: 'attn_k',
  v_proj: 'attn_v',
  qkv_proj: 'attn_qkv',
  o_proj: 'attn_output',
  gate_proj: 'ffn_gate',
  up_proj: 'ffn_up',
  gate_up_proj: 'ffn_up',
  down_proj: 'ffn_down',
};

/** The module a base GGUF tensor name stands for, on a model with or without fused projections. */
function ggufLoraModule(tensor: string, fused: boolean): LoraModule | undefined {
  if (tensor === 'ffn_up') return fused ? 'gate_up_proj' : 'up_proj';
  return allLoraModules.find((m) => ggufLoraNames[m] === tensor);
}

/** What an adapter file must agree with: the base model llama.cpp will load it on. */
export interface GgufLoraBase {
  config: EngineConfig;
  /** Its GGUF general.architecture ('llama', 'qwen2', …). */
  architecture: string;
  /** Whether that GGUF's Q/K rows are permuted for ggml's RoPE (llama.cpp's converter does it for 'llama'). */
  permutedQk: boolean;
}

/** llama.cpp's LlamaModel.permute of the rows of a [rows, cols] matrix over `heads` heads. */
export function permuteRows(values: Float32Array, heads: number, cols: number): Float32Array {
  const rows = values.length / cols;
  const half = rows / heads / 2;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++)
    for (let j = 0; j < 2; j++)
      for (let i = 0; i < half; i++) {
        const src = (h * 2 * half + j * half + i) * cols;
        out.set(values.subarray(src, src + cols), (h * 2 * half + 2 * i + j) * cols);
      }
  return out;
}

function ropeHeads(module: LoraModule, c: EngineConfig): number | undefined {
  return module === 'q_proj' ? c.numHeads : module === 'k_proj' ? c.numKvHeads : undefined;
}

/** How writeGgufLora names and stores the file. */
export interface WriteGgufLoraOptions {
  /** general.name (default 'diffuse LoRA'). */
  name?: string;
  /** How the matrices are stored (default F32, the training precision). */
  dtype?: 'F32' | 'F16';
}

/**
 * Writes an adapter's matrices (by canonical PEFT key, as readAdapterWeights gives them) as a
 * llama.cpp GGUF LoRA for `base`. Tensors go in PEFT key order, as convert_lora_to_gguf.py
 * writes them; the file is written atomically.
 */
export async function writeGgufLora(path: string, weights: Pick<AdapterWeights, 'tensors' | 'modules'> & { alpha: number }, base: GgufLoraBase, options: WriteGgufLoraOptions = {}): Promise<void> {
  const dtype = options.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'F16') throw new InvalidArgumentError(`a GGUF LoRA is stored as F32 or F16, not ${String(dtype)}`);
  const shapes = projectionShapes(base.config);
  const tensors: GgufTensorOut[] = [];
  const keys = [...weights.tensors.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const key of keys) {
    const m = /^base_model\.model\.model\.layers\.(\d+)\.\w+\.(\w+)\.lora_(A|B)\.weight$/.exec(key);
    if (!m) throw new InvalidArgumentError(`'${key}' is not a canonical PEFT LoRA key`);
    const module = m[2] as LoraModule;
    const [out, inF] = shapes[module];
    let data = weights.tensors.get(key)!;
    const rank = data.length / (m[3] === 'A' ? inF : out);
    const heads = ropeHeads(module, base.config);
    if (m[3] === 'B' && base.permutedQk && heads) data = permuteRows(data, heads, rank);
    tensors.push({ name: `blk.${m[1]}.${ggufLoraNames[module]}.weight.lora_${m[3].toLowerCase()}`, shape: m[3] === 'A' ? [rank, inF] : [out, rank], data, type: dtype });
  }
  const metadata: [string, GgufMeta][] = [
    ['general.architecture', { type: 'string', value: base.architecture }],
    ['general.type', { type: 'string', value: 'adapter' }],
    ['adapter.type', { type: 'string', value: 'lora' }],
    ['general.name', { type: 'string', value: options.name ?? 'diffuse LoRA' }],
    ['adapter.lora.alpha', { type: 'f32', value: weights.alpha }],
    ['general.quantization_version', { type: 'u32', value: 2 }],
  ];
  await writeGgufFile(path, metadata, tensors);
}

const TENSOR = /^blk\.(\d+)\.(\w+)\.weight\.lora_(a|b)$/;

/**
 * Reads a llama.cpp GGUF LoRA (F32, F16 or BF16 matrices) for `base`, checking its type, its
 * architecture, every name and shape; lora_b of Q/K is un-permuted back to the engine's
 * (Hugging Face's) row order where the base's are permuted.
 */
export async function readGgufLora(path: string, base: GgufLoraBase, modelName: string): Promise<AdapterWeights> {
  const gguf: GgufFile = await readGguf(path);
  const type = metaString(gguf, 'general.type');
  if (type !== 'adapter') throw new ModelFormatError(path, 'general.type', `is ${JSON.stringify(type ?? null)}, not "adapter"; give a LoRA adapter GGUF, not a model`);
  const adapterType = metaString(gguf, 'adapter.type');
  if (adapterType !== 'lora') throw new UnsupportedError(`${path}: adapter.type is ${JSON.stringify(adapterType ?? null)}; diffuse applies LoRA adapters only`);
  const arch = metaString(gguf, 'general.architecture');
  if (arch !== base.architecture)
    throw new ModelFormatError(path, 'general.architecture', `is ${JSON.stringify(arch ?? null)}, but ${modelName} is '${base.architecture}'; the adapter was made for another model`);
  const alpha = metaNumber(gguf, 'adapter.lora.alpha');
  if (!(alpha > 0) || !Number.isFinite(alpha)) throw new ModelFormatError(path, 'adapter.lora.alpha', `must be a positive number, not ${alpha}`);
  const fused = base.config.fusedProjections ?? false;
  const shapes = projectionShapes(base.config);
  const found = new Map<string, { shape: number[]; name: string }>();
  const modules = new Set<LoraModule>();
  let rank: number | undefined;
  for (const t of gguf.tensors) {
    const m = TENSOR.exec(t.name);
    const module = m ? ggufLoraModule(m[2], fused) : undefined;
    if (!m || !module) throw new UnsupportedError(`${path}: tensor '${t.name}' is not a LoRA matrix of ${[...new Set(Object.values(ggufLoraNames))].join(', ')}; diffuse cannot apply it`);
    const layer = Number(m[1]);
    if (layer >= base.config.numLayers) throw new ModelFormatError(path, `tensor '${t.name}'`, `is for layer ${layer}, but ${modelName} has ${base.config.numLayers} layers`);
    if (!['F32', 'F16', 'BF16'].includes(t.type)) throw new UnsupportedError(`${path}: tensor '${t.name}' is stored as ${t.type}; only F32, F16 and BF16 adapters can be read`);
    const shape = t.dims.slice().reverse();
    const r = m[3] === 'a' ? shape[0] : shape[1];
    rank ??= r;
    const [out, inF] = shapes[module];
    const want = m[3] === 'a' ? [rank, inF] : [out, rank];
    if (shape.join() !== want.join())
      throw new ModelFormatError(path, `tensor '${t.name}'`, `has shape [${shape.join(', ')}] (GGUF dims [${t.dims.join(', ')}]), but rank ${rank} on ${modelName} needs [${want.join(', ')}]`);
    modules.add(module);
    found.set(canonicalKey(layer, module, m[3] === 'a' ? 'A' : 'B'), { shape, name: t.name });
  }
  if (rank === undefined) throw new ModelFormatError(path, undefined, 'holds no LoRA matrices');
  for (const [key, t] of found) {
    const partner = key.replace(/lora_([AB])/, (_, x: string) => (x === 'A' ? 'lora_B' : 'lora_A'));
    if (!found.has(partner)) throw new ModelFormatError(path, `tensor '${t.name}'`, 'has no lora_a / lora_b partner');
  }
  const tensors = new Map<string, Float32Array>();
  const { handle } = await openRegularFile(path, 'GGUF adapter');
  try {
    for (const [key, t] of found) {
      const info = gguf.tensors.find((x) => x.name === t.name)!;
      const bytes = await readAt(handle, info.offset, info.byteLength);
      if (bytes.length < info.byteLength) throw new ModelFormatError(path, `tensor '${t.name}'`, 'ends past the end of the file; it is truncated');
      let values = native().dequantize(info.type, bytes, t.shape[0] * t.shape[1]);
      const module = /\.(\w+)\.lora_[AB]\.weight$/.exec(key)![1] as LoraModule;
      const heads = ropeHeads(module, base.config);
      if (key.endsWith('lora_B.weight') && base.permutedQk && heads) values = unpermuteRows(values, heads, rank);
      tensors.set(key, values);
    }
  } finally {
    await handle.close();
  }
  return {
    config: { file: path, rank, alpha, targetModules: allLoraModules.filter((m) => modules.has(m)), baseModel: null, dropout: 0 },
    file: path,
    modules: allLoraModules.filter((m) => modules.has(m)),
    tensors,
  };
}

/**
 * The GGUF base llama.cpp would run a model as: a GGUF model as it is; a Hugging Face directory
 * as convert_hf_to_gguf.py converts it (convertedGgufArchitecture).
 */
export async function ggufLoraBase(spec: string): Promise<GgufLoraBase> {
  const source = await resolveModel(spec);
  const files = await loadModelSpec(source.format === 'gguf' ? source.path : source.dir);
  if (files.gguf) {
    const { name, permutedQk } = ggufArchitecture(files.gguf);
    return { config: files.config, architecture: name, permutedQk };
  }
  const modelType = (files.hf?.config as { model_type?: string } | undefined)?.model_type;
  const converted = modelType === undefined ? undefined : convertedGgufArchitecture(modelType);
  if (!converted)
    throw new UnsupportedError(`${spec}: model_type ${JSON.stringify(modelType)} has no llama.cpp LoRA layout diffuse knows; it writes those of ${families}`);
  return { config: files.config, architecture: converted.name, permutedQk: converted.permutedQk };
}

/** Loads a llama.cpp GGUF LoRA onto `model` (named by `model.spec`). */
export async function loadGgufLoraAdapter(model: Model, path: string, options: LoadAdapterOptions = {}): Promise<Adapter> {
  const base = await ggufLoraBase(model.spec);
  return adapterFromWeights(model, await readGgufLora(path, { ...base, config: model.config }, model.spec), path, options);
}
