/**
 * Writes GGUF v3 files for tests: any metadata (arrays included), tensors stored as
 * F32/F16/BF16/Q8_0/Q4_0/Q4_1 with the TypeScript quantizers (or raw bytes of any type), and
 * whole tiny models laid out as llama.cpp's converter lays them out — GGUF tensor names, dims
 * innermost first, Q/K rows permuted for ggml's RoPE on 'llama', Llama-3 RoPE scaling as a
 * `rope_freqs.weight` tensor.
 *
 *   await writeGgufModel(path, makeTinyModel({ kvHeads: 1 }), { type: 'Q8_0' });
 *   const { bytes, fields } = encodeGguf({ metadata: { 'general.architecture': 'llama', n: gguf.u64(3) }, tensors });
 *
 * `fields` lists where every count, length, type, dimension and offset sits in the bytes, so a
 * fuzzer can overwrite exactly those.
 */
import { readFile, writeFile } from 'node:fs/promises';

import { ggmlTypes, readGguf, type GgufValue } from '../../lib/formats/gguf.js';
import { ggufTensorName } from '../../lib/model/tensors.js';
import { quantize, storedTypes, type StoredType } from './quantize.js';
import type { TinyModel } from './tiny-model.js';

export type GgufScalarType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'bool' | 'string' | 'u64' | 'i64' | 'f64';
export interface GgufTyped {
  type: GgufScalarType;
  value: number | bigint | boolean | string;
}
export interface GgufTypedArray {
  type: 'array';
  itemType: GgufScalarType;
  values: (number | bigint | boolean | string)[];
}
/**
 * A metadata value. Plain values are typed as llama.cpp's writer types them: strings, booleans,
 * integers in [0, 2^32) as u32, negative ones as i32, other numbers as f32, bigints as u64,
 * arrays by their first item. Wrap with `gguf.*` for any other type.
 */
export type GgufWriteValue = string | boolean | number | bigint | (string | boolean | number | bigint)[] | GgufTyped | GgufTypedArray;

const typeIds: Record<GgufScalarType | 'array', number> = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 };

/** Explicitly typed metadata values. */
export const gguf = {
  u8: (value: number): GgufTyped => ({ type: 'u8', value }),
  i8: (value: number): GgufTyped => ({ type: 'i8', value }),
  u16: (value: number): GgufTyped => ({ type: 'u16', value }),
  i16: (value: number): GgufTyped => ({ type: 'i16', value }),
  u32: (value: number): GgufTyped => ({ type: 'u32', value }),
  i32: (value: number): GgufTyped => ({ type: 'i32', value }),
  f32: (value: number): GgufTyped => ({ type: 'f32', value }),
  f64: (value: number): GgufTyped => ({ type: 'f64', value }),
  u64: (value: number | bigint): GgufTyped => ({ type: 'u64', value }),
  i64: (value: number | bigint): GgufTyped => ({ type: 'i64', value }),
  bool: (value: boolean): GgufTyped => ({ type: 'bool', value }),
  string: (value: string): GgufTyped => ({ type: 'string', value }),
  array: (itemType: GgufScalarType, values: (number | bigint | boolean | string)[]): GgufTypedArray => ({ type: 'array', itemType, values }),
};

export type GgufWriteTensor =
  /** Values stored as `type`; `shape` outermost first (HF order), written reversed as GGUF dims. */
  | { name: string; shape: number[]; type: StoredType; data: Float32Array }
  /** Bytes already in a ggml type (any name in lib/formats/gguf.ts's ggmlTypes). */
  | { name: string; shape: number[]; rawType: string; bytes: Uint8Array };

export interface GgufField {
  pos: number;
  size: 4 | 8;
  role: 'magic' | 'version' | 'count' | 'length' | 'type' | 'n_dims' | 'dim' | 'offset' | 'value';
  label: string;
}

export interface EncodedGguf {
  bytes: Buffer;
  fields: GgufField[];
  dataOffset: number;
  alignment: number;
}

function inferType(v: string | boolean | number | bigint): GgufScalarType {
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'bigint') return v < 0n ? 'i64' : 'u64';
  if (Number.isInteger(v) && v >= 0 && v < 2 ** 32) return 'u32';
  if (Number.isInteger(v) && v < 0 && v >= -(2 ** 31)) return 'i32';
  return 'f32';
}

class Writer {
  private chunks: Buffer[] = [];
  pos = 0;
  readonly fields: GgufField[] = [];

  push(buf: Buffer, field?: Omit<GgufField, 'pos' | 'size'>): void {
    if (field) this.fields.push({ pos: this.pos, size: buf.length as 4 | 8, ...field });
    this.chunks.push(buf);
    this.pos += buf.length;
  }
  u32(v: number, field?: Omit<GgufField, 'pos' | 'size'>) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b, field);
  }
  u64(v: number | bigint, field?: Omit<GgufField, 'pos' | 'size'>) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b, field);
  }
  string(s: string, label: string) {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length, { role: 'length', label });
    this.push(bytes);
  }
  scalar(type: GgufScalarType, v: number | bigint | boolean | string, label: string) {
    const b = Buffer.alloc({ u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, string: 0, u64: 8, i64: 8, f64: 8 }[type]);
    switch (type) {
      case 'string': return this.string(String(v), label);
      case 'u8': b.writeUInt8(Number(v)); break;
      case 'i8': b.writeInt8(Number(v)); break;
      case 'u16': b.writeUInt16LE(Number(v)); break;
      case 'i16': b.writeInt16LE(Number(v)); break;
      case 'u32': b.writeUInt32LE(Number(v)); break;
      case 'i32': b.writeInt32LE(Number(v)); break;
      case 'f32': b.writeFloatLE(Number(v)); break;
      case 'bool': b.writeUInt8(v ? 1 : 0); break;
      case 'u64': b.writeBigUInt64LE(BigInt(v)); break;
      case 'i64': b.writeBigInt64LE(BigInt(v)); break;
      case 'f64': b.writeDoubleLE(Number(v)); break;
    }
    this.push(b, b.length >= 4 ? { role: 'value', label } : undefined);
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function writeValue(w: Writer, key: string, value: GgufWriteValue): void {
  if (Array.isArray(value)) {
    const itemType = value.length ? inferType(value[0]) : 'u32';
    return writeValue(w, key, gguf.array(itemType, value));
  }
  if (typeof value === 'object' && value.type === 'array') {
    w.u32(typeIds.array, { role: 'type', label: key });
    w.u32(typeIds[value.itemType], { role: 'type', label: `${key} items` });
    w.u64(value.values.length, { role: 'count', label: key });
    for (const item of value.values) w.scalar(value.itemType, item, key);
    return;
  }
  const typed: GgufTyped = typeof value === 'object' ? (value as GgufTyped) : { type: inferType(value), value };
  w.u32(typeIds[typed.type], { role: 'type', label: key });
  w.scalar(typed.type, typed.value, key);
}

/** The bytes of a GGUF v3 file (or `version`) with this metadata and these tensors, in order. */
export function encodeGguf(spec: {
  metadata?: Record<string, GgufWriteValue> | [string, GgufWriteValue][];
  tensors?: GgufWriteTensor[];
  version?: number;
  /** Written as general.alignment (u32) unless the metadata has it; default 32. */
  alignment?: number;
}): EncodedGguf {
  const entries = Array.isArray(spec.metadata) ? spec.metadata.slice() : Object.entries(spec.metadata ?? {});
  const given = entries.find(([k]) => k === 'general.alignment');
  const asked = given ? Number((given[1] as GgufTyped).value ?? given[1]) : (spec.alignment ?? 32);
  if (!given && spec.alignment !== undefined) entries.push(['general.alignment', gguf.u32(spec.alignment)]);
  // An invalid alignment is written as given, for tests of the reader, with unpadded data.
  const alignment = Number.isInteger(asked) && asked > 0 && asked <= 2 ** 16 && (asked & (asked - 1)) === 0 ? asked : 1;

  const tensors = (spec.tensors ?? []).map((t) => {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if ('data' in t) {
      if (t.data.length !== count) throw new Error(`encodeGguf: '${t.name}' has ${t.data.length} values for shape [${t.shape}]`);
      return { name: t.name, dims: t.shape.slice().reverse(), typeId: storedTypes[t.type].ggmlId, bytes: quantize(t.type, t.data) };
    }
    const id = Object.entries(ggmlTypes).find(([, info]) => info.name === t.rawType)?.[0];
    if (id === undefined) throw new Error(`encodeGguf: unknown ggml type '${t.rawType}'`);
    return { name: t.name, dims: t.shape.slice().reverse(), typeId: Number(id), bytes: t.bytes };
  });

  const w = new Writer();
  w.push(Buffer.from('GGUF'), { role: 'magic', label: 'magic' });
  w.u32(spec.version ?? 3, { role: 'version', label: 'version' });
  w.u64(tensors.length, { role: 'count', label: 'tensor_count' });
  w.u64(entries.length, { role: 'count', label: 'metadata_kv_count' });
  for (const [key, value] of entries) {
    w.string(key, `key ${key}`);
    writeValue(w, key, value);
  }
  const padded = (n: number) => Math.ceil(n / alignment) * alignment;
  let rel = 0;
  for (const t of tensors) {
    w.string(t.name, `tensor ${t.name} name`);
    w.u32(t.dims.length, { role: 'n_dims', label: t.name });
    for (const d of t.dims) w.u64(d, { role: 'dim', label: t.name });
    w.u32(t.typeId, { role: 'type', label: t.name });
    w.u64(rel, { role: 'offset', label: t.name });
    rel = padded(rel + t.bytes.length);
  }
  const dataOffset = padded(w.pos);
  w.push(Buffer.alloc(dataOffset - w.pos));
  for (const t of tensors) {
    w.push(Buffer.from(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength));
    w.push(Buffer.alloc(padded(t.bytes.length) - t.bytes.length));
  }
  return { bytes: w.bytes(), fields: w.fields, dataOffset, alignment };
}

export async function writeGguf(path: string, spec: Parameters<typeof encodeGguf>[0]): Promise<EncodedGguf> {
  const encoded = encodeGguf(spec);
  await writeFile(path, encoded.bytes);
  return encoded;
}

/**
 * llama.cpp's LlamaModel.permute: within each of `heads` heads, row (j, i) of the Hugging Face
 * layout (j ∈ {0, 1} the half, i < head_dim/2) moves to row (i, j).
 */
export function permuteQk(data: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  const out = new Float32Array(data.length);
  const half = rows / heads / 2;
  for (let h = 0; h < heads; h++)
    for (let j = 0; j < 2; j++)
      for (let i = 0; i < half; i++) {
        const src = (h * 2 * half + j * half + i) * cols;
        const dst = (h * 2 * half + 2 * i + j) * cols;
        out.set(data.subarray(src, src + cols), dst);
      }
  return out;
}

/** Llama-3's RoPE divisors as convert_hf_to_gguf.py writes them to rope_freqs.weight. */
export function llama3RopeFreqs(theta: number, headDim: number, s: { factor?: number; lowFreqFactor?: number; highFreqFactor?: number; originalMaxPositionEmbeddings?: number }): Float32Array {
  const factor = s.factor ?? 8;
  const low = s.lowFreqFactor ?? 1;
  const high = s.highFreqFactor ?? 4;
  const original = s.originalMaxPositionEmbeddings ?? 8192;
  const out = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) {
    const wavelength = (2 * Math.PI) / (1 / theta ** ((2 * i) / headDim));
    if (wavelength < original / high) out[i] = 1;
    else if (wavelength > original / low) out[i] = factor;
    else {
      const smooth = (original / wavelength - low) / (high - low);
      out[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

export interface GgufModelOptions {
  /** Storage for 2-D weights (default F32). Norms and biases stay F32 as the converter keeps them. */
  type?: StoredType;
  /** Per-tensor storage (HF name), overriding `type`. */
  typeFor?: (hfName: string, shape: number[]) => StoredType;
  /** 'llama' (default; Q/K permuted) or 'qwen2' (default when the model has q/k/v biases). */
  arch?: 'llama' | 'qwen2';
  /** Apply llama.cpp's Q/K permutation (default: arch is 'llama'). */
  permute?: boolean;
  /** Tokenizer metadata (tokenizer.ggml.*, tokenizer.chat_template); default a gpt2-style list of placeholder tokens. */
  tokenizer?: Record<string, GgufWriteValue>;
  /** Extra metadata, written after the model's (a key given here replaces the model's). */
  metadata?: Record<string, GgufWriteValue>;
  /** Metadata keys to leave out (for tests of missing keys). */
  omit?: string[];
  /** Edits the tensor list (GGUF names) before it is written: drop, reshape or retype tensors. */
  editTensors?: (tensors: GgufWriteTensor[]) => GgufWriteTensor[];
  alignment?: number;
}

/** The GGUF a converter would make of this tiny model. */
export function encodeGgufModel(model: TinyModel, options: GgufModelOptions = {}): EncodedGguf {
  const c = model.config;
  const arch = options.arch ?? (c.attentionBias ? 'qwen2' : 'llama');
  const permute = options.permute ?? arch === 'llama';
  const meta: Record<string, GgufWriteValue> = {
    'general.architecture': arch,
    'general.name': 'tiny',
    [`${arch}.block_count`]: c.numLayers,
    [`${arch}.context_length`]: 2048,
    [`${arch}.embedding_length`]: c.hiddenSize,
    [`${arch}.feed_forward_length`]: c.intermediateSize,
    [`${arch}.attention.head_count`]: c.numHeads,
    [`${arch}.attention.head_count_kv`]: c.numKvHeads,
    [`${arch}.rope.freq_base`]: gguf.f32(c.ropeTheta),
    [`${arch}.attention.layer_norm_rms_epsilon`]: gguf.f32(c.rmsNormEps),
    [`${arch}.rope.dimension_count`]: c.headDim,
  };
  if (c.headDim * c.numHeads !== c.hiddenSize) {
    meta[`${arch}.attention.key_length`] = c.headDim;
    meta[`${arch}.attention.value_length`] = c.headDim;
  }
  if (c.ropeScaling?.type === 'linear') {
    meta[`${arch}.rope.scaling.type`] = 'linear';
    meta[`${arch}.rope.scaling.factor`] = gguf.f32(c.ropeScaling.factor ?? 1);
  }
  Object.assign(
    meta,
    options.tokenizer ?? {
      'tokenizer.ggml.model': 'gpt2',
      'tokenizer.ggml.tokens': Array.from({ length: c.vocabSize }, (_, i) => `<t${i}>`),
    },
    options.metadata ?? {},
  );
  for (const key of options.omit ?? []) delete meta[key];

  const tensors: GgufWriteTensor[] = [];
  for (const [name, t] of model.weights) {
    let data = t.data;
    if (permute && /\.self_attn\.[qk]_proj\.weight$/.test(name)) data = permuteQk(data, t.shape[0], t.shape[1], name.includes('.q_proj.') ? c.numHeads : c.numKvHeads);
    let type: StoredType = t.shape.length === 1 ? 'F32' : (options.type ?? 'F32');
    if (options.typeFor) type = options.typeFor(name, t.shape);
    // The converter falls back to F16 for rows that do not fill whole blocks.
    if (t.shape.at(-1)! % storedTypes[type].blockValues !== 0) type = 'F16';
    tensors.push({ name: ggufTensorName(name)!, shape: t.shape, type, data });
  }
  if (c.ropeScaling?.type === 'llama3')
    tensors.push({ name: 'rope_freqs.weight', shape: [c.headDim / 2], type: 'F32', data: llama3RopeFreqs(c.ropeTheta, c.headDim, c.ropeScaling) });
  return encodeGguf({ metadata: meta, tensors: options.editTensors ? options.editTensors(tensors) : tensors, alignment: options.alignment });
}

export async function writeGgufModel(path: string, model: TinyModel, options: GgufModelOptions = {}): Promise<EncodedGguf> {
  const encoded = encodeGgufModel(model, options);
  await writeFile(path, encoded.bytes);
  return encoded;
}

/**
 * A copy of the GGUF at `path` with `extra` metadata added (or replacing keys), tensors byte for
 * byte. Read values are retyped for writing: integer numbers as u32 (i32 when negative), others
 * as f32, arrays of numbers by the widest of their items; the reader takes them back as numbers.
 */
export async function copyGgufWith(path: string, out: string, extra: Record<string, GgufWriteValue>): Promise<void> {
  const file = await readGguf(path);
  const typed = (v: GgufValue): GgufWriteValue => {
    if (!Array.isArray(v)) return v as GgufWriteValue;
    if (v.every((x) => typeof x === 'number')) {
      const nums = v as number[];
      const itemType = nums.some((x) => !Number.isInteger(x)) ? 'f32' : nums.some((x) => x < 0) ? 'i32' : 'u32';
      return gguf.array(itemType, nums);
    }
    return v as GgufWriteValue;
  };
  const metadata: [string, GgufWriteValue][] = [...file.metadata].filter(([k]) => !(k in extra)).map(([k, v]) => [k, typed(v)]);
  metadata.push(...Object.entries(extra));
  const bytes = await readFile(path);
  const tensors: GgufWriteTensor[] = file.tensors.map((t) => ({
    name: t.name,
    shape: t.dims.slice().reverse(),
    rawType: t.type,
    bytes: bytes.subarray(t.offset, t.offset + t.byteLength),
  }));
  await writeGguf(out, { metadata, tensors });
}
