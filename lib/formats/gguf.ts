/**
 * GGUF (versions 2 and 3, little-endian) header reader: metadata and tensor directory, never the
 * tensor data (the engine maps that). Every count, length and offset is checked against the
 * file's size before it is trusted, and the header is read in growing chunks up to a fixed cap,
 * so a malformed or truncated file gives a ModelFormatError naming the file, the field and the
 * problem — never a crash, a hang, a read of a whole multi-GB file or a giant allocation.
 *
 * Layout: magic "GGUF", u32 version, u64 tensor_count, u64 metadata_kv_count, the metadata
 * (string key, u32 type, value), the tensor infos (string name, u32 n_dims, u64 dims[n_dims]
 * innermost first, u32 ggml type, u64 offset relative to the data section), then padding to
 * `general.alignment` (default 32) and the data section. Strings are a u64 length and UTF-8 bytes.
 */
import { ModelFormatError } from '../errors.js';
import { openRegularFile, readAt } from './open-file.js';

export type GgufValue = number | bigint | boolean | string | GgufValue[];

/**
 * GGML tensor types by id, with the values and bytes of one block (ggml's type traits). The
 * engine widens only those in `supportedTensorTypes`; the others are known so that a file using
 * them is reported as unsupported rather than malformed.
 */
export const ggmlTypes: Record<number, { name: string; blockValues: number; blockBytes: number }> = {
  0: { name: 'F32', blockValues: 1, blockBytes: 4 },
  1: { name: 'F16', blockValues: 1, blockBytes: 2 },
  2: { name: 'Q4_0', blockValues: 32, blockBytes: 18 },
  3: { name: 'Q4_1', blockValues: 32, blockBytes: 20 },
  6: { name: 'Q5_0', blockValues: 32, blockBytes: 22 },
  7: { name: 'Q5_1', blockValues: 32, blockBytes: 24 },
  8: { name: 'Q8_0', blockValues: 32, blockBytes: 34 },
  9: { name: 'Q8_1', blockValues: 32, blockBytes: 36 },
  10: { name: 'Q2_K', blockValues: 256, blockBytes: 84 },
  11: { name: 'Q3_K', blockValues: 256, blockBytes: 110 },
  12: { name: 'Q4_K', blockValues: 256, blockBytes: 144 },
  13: { name: 'Q5_K', blockValues: 256, blockBytes: 176 },
  14: { name: 'Q6_K', blockValues: 256, blockBytes: 210 },
  15: { name: 'Q8_K', blockValues: 256, blockBytes: 292 },
  16: { name: 'IQ2_XXS', blockValues: 256, blockBytes: 66 },
  17: { name: 'IQ2_XS', blockValues: 256, blockBytes: 74 },
  18: { name: 'IQ3_XXS', blockValues: 256, blockBytes: 98 },
  19: { name: 'IQ1_S', blockValues: 256, blockBytes: 50 },
  20: { name: 'IQ4_NL', blockValues: 32, blockBytes: 18 },
  21: { name: 'IQ3_S', blockValues: 256, blockBytes: 110 },
  22: { name: 'IQ2_S', blockValues: 256, blockBytes: 82 },
  23: { name: 'IQ4_XS', blockValues: 256, blockBytes: 136 },
  24: { name: 'I8', blockValues: 1, blockBytes: 1 },
  25: { name: 'I16', blockValues: 1, blockBytes: 2 },
  26: { name: 'I32', blockValues: 1, blockBytes: 4 },
  27: { name: 'I64', blockValues: 1, blockBytes: 8 },
  28: { name: 'F64', blockValues: 1, blockBytes: 8 },
  29: { name: 'IQ1_M', blockValues: 256, blockBytes: 56 },
  30: { name: 'BF16', blockValues: 1, blockBytes: 2 },
  34: { name: 'TQ1_0', blockValues: 256, blockBytes: 54 },
  35: { name: 'TQ2_0', blockValues: 256, blockBytes: 66 },
  39: { name: 'MXFP4', blockValues: 32, blockBytes: 17 },
};

/** Tensor types the engine widens to f32 (native/io/dequant.h). */
export const supportedTensorTypes = new Set(['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K']);

export interface GgufTensorInfo {
  name: string;
  /** GGUF order: dims[0] is the innermost (contiguous) dimension. */
  dims: number[];
  type: string;
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  byteLength: number;
}

export interface GgufFile {
  path: string;
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  dataOffset: number;
  fileSize: number;
  /**
   * The values of `rope_freqs.weight` when the file has it: llama.cpp's converter stores
   * Llama-3's RoPE scaling as these per-frequency divisors instead of metadata, and the model's
   * config cannot be known without them, so they are read with the header.
   */
  ropeFreqs?: Float32Array;
  /**
   * Phi-3's LongRoPE per-frequency factors (`rope_factors_long.weight` /
   * `rope_factors_short.weight`), which llama.cpp's converter writes as tensors; read with the
   * header for the same reason.
   */
  ropeFactorsLong?: Float32Array;
  ropeFactorsShort?: Float32Array;
}

const MAGIC = 0x46554747; // "GGUF" little-endian
const MAGIC_BIG_ENDIAN_VERSION_3 = 0x03000000;
const MAX_DIMS = 4; // GGML_MAX_DIMS
/** No real header comes near this (a 262k-token vocabulary with scores is ~10 MB). */
export const MAX_GGUF_HEADER_BYTES = 128 * 1024 * 1024;
/** Longest metadata array read; real ones are vocabularies of at most a few hundred thousand. */
export const MAX_GGUF_ARRAY_ITEMS = 1 << 24;
/** The GGUF specification's bound on key length; tensor names get the same generous bound. */
const MAX_NAME_BYTES = 65535;
const MAX_ROPE_FREQS = 65536;
const FIRST_CHUNK = 1 << 20;

/** Raised inside the parser when the buffer ends before the header does: read more and retry. */
class NeedMoreBytes extends Error {}

class Cursor {
  pos = 0;
  /** Where the header must end: the file's end or the header cap, whichever comes first. */
  readonly limit: number;
  constructor(
    readonly buf: Buffer,
    readonly fileSize: number,
    readonly path: string,
  ) {
    this.limit = Math.min(fileSize, MAX_GGUF_HEADER_BYTES);
  }

  fail(field: string, problem: string): never {
    throw new ModelFormatError(this.path, field, problem);
  }

  need(n: number, field: string): void {
    if (this.pos + n <= this.buf.length) return;
    if (this.pos + n > this.fileSize)
      this.fail(field, `the file ends at byte ${this.fileSize}, before this field's ${n} bytes at ${this.pos}; it is truncated`);
    if (this.pos + n > this.limit)
      this.fail(field, `this field's ${n} bytes at ${this.pos} would make the header larger than ${MAX_GGUF_HEADER_BYTES} bytes; the header is corrupt`);
    throw new NeedMoreBytes();
  }

  u8(f: string) { this.need(1, f); return this.buf.readUInt8(this.pos++); }
  i8(f: string) { this.need(1, f); return this.buf.readInt8(this.pos++); }
  u16(f: string) { this.need(2, f); const v = this.buf.readUInt16LE(this.pos); this.pos += 2; return v; }
  i16(f: string) { this.need(2, f); const v = this.buf.readInt16LE(this.pos); this.pos += 2; return v; }
  u32(f: string) { this.need(4, f); const v = this.buf.readUInt32LE(this.pos); this.pos += 4; return v; }
  i32(f: string) { this.need(4, f); const v = this.buf.readInt32LE(this.pos); this.pos += 4; return v; }
  f32(f: string) { this.need(4, f); const v = this.buf.readFloatLE(this.pos); this.pos += 4; return v; }
  f64(f: string) { this.need(8, f); const v = this.buf.readDoubleLE(this.pos); this.pos += 8; return v; }
  /** A u64 as a number when it is exactly representable, else as a bigint. */
  u64(f: string): number | bigint {
    this.need(8, f);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  i64(f: string): number | bigint {
    this.need(8, f);
    const v = this.buf.readBigInt64LE(this.pos);
    this.pos += 8;
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  /** A u64 count that must fit, at `minBytesEach` bytes per item, in what is left of the header. */
  count(f: string, minBytesEach: number, max = Number.MAX_SAFE_INTEGER): number {
    const n = this.u64(f);
    const left = this.limit - this.pos;
    if (typeof n === 'bigint' || n * minBytesEach > left) {
      const where = left < this.fileSize - this.pos ? `the ${MAX_GGUF_HEADER_BYTES}-byte header limit` : 'the file';
      this.fail(f, `count ${n} cannot fit in the ${left} bytes left before ${where}; the header is corrupt`);
    }
    if (n > max) this.fail(f, `count ${n} is more than the ${max} this reader accepts; the header is corrupt`);
    return n;
  }

  string(f: string, maxBytes = Number.MAX_SAFE_INTEGER): string {
    const len = this.count(f, 1, maxBytes);
    this.need(len, f);
    const s = this.buf.toString('utf8', this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
}

// Metadata value types.
const enum T { U8 = 0, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 }
/** The smallest encoding of one value of each type (a string is at least its u64 length). */
const minBytes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 10: 8, 11: 8, 12: 8 };

function readScalar(c: Cursor, type: number, key: string): GgufValue {
  switch (type) {
    case T.U8: return c.u8(key);
    case T.I8: return c.i8(key);
    case T.U16: return c.u16(key);
    case T.I16: return c.i16(key);
    case T.U32: return c.u32(key);
    case T.I32: return c.i32(key);
    case T.F32: return c.f32(key);
    case T.BOOL: {
      const b = c.u8(key);
      if (b > 1) c.fail(key, `boolean value ${b} is neither 0 nor 1`);
      return b === 1;
    }
    case T.STRING: return c.string(key);
    case T.U64: return c.u64(key);
    case T.I64: return c.i64(key);
    case T.F64: return c.f64(key);
    default:
      return c.fail(key, `unknown metadata value type ${type}`);
  }
}

function readValue(c: Cursor, type: number, key: string): GgufValue {
  if (type !== T.ARRAY) return readScalar(c, type, key);
  const itemType = c.u32(key);
  if (itemType === T.ARRAY) c.fail(key, 'is an array of arrays, which neither this reader nor llama.cpp accepts');
  if (!(itemType in minBytes)) c.fail(key, `unknown array item type ${itemType}`);
  const n = c.count(key, minBytes[itemType], MAX_GGUF_ARRAY_ITEMS);
  const out: GgufValue[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = readScalar(c, itemType, key);
  return out;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

function parse(buf: Buffer, fileSize: number, path: string): GgufFile {
  const c: Cursor = new Cursor(buf, fileSize, path);
  const magic = c.u32('magic');
  if (magic !== MAGIC) c.fail('magic', `not a GGUF file (magic 0x${magic.toString(16).padStart(8, '0')}, expected "GGUF")`);
  const version = c.u32('version');
  if (version === MAGIC_BIG_ENDIAN_VERSION_3) c.fail('version', 'big-endian GGUF files are not supported; convert the model on a little-endian machine');
  if (version !== 2 && version !== 3) c.fail('version', `GGUF version ${version} is not supported (2 and 3 are); reconvert the model with a current llama.cpp`);
  const tensorCount = c.count('tensor_count', 8 + 4 + 8 + 4 + 8);
  const kvCount = c.count('metadata_kv_count', 8 + 4 + 1);

  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata key #${i}`, MAX_NAME_BYTES);
    if (metadata.has(key)) c.fail(key, 'metadata key appears twice');
    const type = c.u32(key);
    metadata.set(key, readValue(c, type, key));
  }

  const alignmentValue = metadata.get('general.alignment') ?? 32;
  if (typeof alignmentValue !== 'number' || !isPowerOfTwo(alignmentValue) || alignmentValue > 2 ** 30)
    c.fail('general.alignment', `alignment ${String(alignmentValue)} is not a power of two from 1 to 2^30`);
  const alignment = alignmentValue as number;

  const raw: { name: string; dims: number[]; type: string; rel: number; byteLength: number }[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`tensor #${i} name`, MAX_NAME_BYTES);
    const field = `tensor '${name}'`;
    if (names.has(name)) c.fail(field, 'appears twice in the tensor directory');
    names.add(name);
    const nDims = c.u32(field);
    if (nDims < 1 || nDims > MAX_DIMS) c.fail(field, `has ${nDims} dimensions (1 to ${MAX_DIMS} allowed)`);
    const dims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const dim = c.u64(field);
      if (typeof dim === 'bigint' || dim === 0) c.fail(field, `dimension ${d} is ${dim}`);
      dims.push(dim);
      elements *= dim;
      if (!Number.isSafeInteger(elements) || elements > fileSize * 8) c.fail(field, `its dimensions [${dims.join(', ')}…] hold more values than the ${fileSize}-byte file can; it is corrupt`);
    }
    const typeId = c.u32(field);
    const type = ggmlTypes[typeId];
    if (!type) c.fail(field, `has unknown tensor type id ${typeId}`);
    if (dims[0] % type.blockValues !== 0)
      c.fail(field, `its rows of ${dims[0]} values do not fill whole ${type.name} blocks of ${type.blockValues}`);
    const rel = c.u64(field);
    if (typeof rel === 'bigint' || rel > fileSize) c.fail(field, `data offset ${rel} is beyond the end of the file (${fileSize} bytes)`);
    if (rel % alignment !== 0) c.fail(field, `data offset ${rel} is not aligned to ${alignment}`);
    raw.push({ name, dims, type: type.name, rel, byteLength: (elements / type.blockValues) * type.blockBytes });
  }

  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const tensors: GgufTensorInfo[] = raw.map((t) => {
    const offset = dataOffset + t.rel;
    if (offset + t.byteLength > fileSize)
      c.fail(`tensor '${t.name}'`, `data (${t.byteLength} bytes at offset ${offset}) runs past the end of the file (${fileSize} bytes); the file is truncated`);
    return { name: t.name, dims: t.dims, type: t.type, offset, byteLength: t.byteLength };
  });
  return { path, version, metadata, tensors, alignment, dataOffset, fileSize };
}

/** Reads a GGUF file's header. Throws ModelFormatError for anything malformed. */
export async function readGguf(path: string): Promise<GgufFile> {
  const { handle, size } = await openRegularFile(path, 'GGUF file');
  try {
    let length = Math.min(size, FIRST_CHUNK);
    let file: GgufFile;
    for (;;) {
      const buf = await readAt(handle, 0, length);
      try {
        file = parse(buf, size, path);
        break;
      } catch (error) {
        if (!(error instanceof NeedMoreBytes)) throw error;
        if (buf.length < length) throw new ModelFormatError(path, undefined, `the file shrank to ${buf.length} bytes while it was read`);
        length = Math.min(size, MAX_GGUF_HEADER_BYTES, length * 4);
      }
    }
    const vector = async (name: string): Promise<Float32Array | undefined> => {
      const t = file.tensors.find((x) => x.name === name);
      if (!t) return undefined;
      if (t.type !== 'F32' || t.dims.length !== 1 || t.dims[0] > MAX_ROPE_FREQS)
        throw new ModelFormatError(path, `tensor '${name}'`, `must be a vector of at most ${MAX_ROPE_FREQS} F32 values, not ${t.type} [${t.dims.join(', ')}]`);
      const bytes = await readAt(handle, t.offset, t.byteLength);
      if (bytes.length < t.byteLength) throw new ModelFormatError(path, `tensor '${name}'`, 'the file ends inside its data');
      const values = new Float32Array(t.dims[0]);
      for (let i = 0; i < values.length; i++) values[i] = bytes.readFloatLE(4 * i);
      return values;
    };
    const freqs = await vector('rope_freqs.weight');
    if (freqs) file.ropeFreqs = freqs;
    const long = await vector('rope_factors_long.weight');
    if (long) file.ropeFactorsLong = long;
    const short = await vector('rope_factors_short.weight');
    if (short) file.ropeFactorsShort = short;
    return file;
  } finally {
    await handle.close();
  }
}

/** A metadata value of the expected kind, or a ModelFormatError naming the key. */
export function metaNumber(file: GgufFile, key: string): number;
export function metaNumber(file: GgufFile, key: string, fallback: number): number;
export function metaNumber(file: GgufFile, key: string, fallback?: number): number {
  const v = file.metadata.get(key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new ModelFormatError(file.path, key, 'is missing');
  }
  if (typeof v !== 'number') throw new ModelFormatError(file.path, key, `must be a number, not ${describeValue(v)}`);
  return v;
}

export function metaString(file: GgufFile, key: string): string | undefined {
  const v = file.metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new ModelFormatError(file.path, key, `must be a string, not ${describeValue(v)}`);
  return v;
}

/** An array-valued metadata entry, or undefined when absent; a ModelFormatError if not an array. */
export function metaArray(file: GgufFile, key: string): GgufValue[] | undefined {
  const v = file.metadata.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new ModelFormatError(file.path, key, `must be an array, not ${describeValue(v)}`);
  return v;
}

/** "a bigint", "an array of 3", … for messages about wrong-typed metadata. */
export function describeValue(v: GgufValue): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return `${typeof v === 'bigint' ? 'the 64-bit integer' : `the ${typeof v}`} ${String(v)}`;
}
