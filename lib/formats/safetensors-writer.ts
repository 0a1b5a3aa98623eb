/**
 * safetensors writer. Layout: u64 little-endian N, N bytes of UTF-8 JSON (padded with spaces to
 * a multiple of 8, as the safetensors library pads it), then the tensors' bytes back to back in
 * header order. The JSON maps each name to { dtype, shape, data_offsets: [begin, end] }, offsets
 * relative to the data section, plus an optional "__metadata__" map of strings.
 *
 * Tensors are given as f32 and stored as F32, F16 or BF16 (both rounded to nearest even, NaN
 * kept a quiet NaN). A tensor's values may be produced lazily, one tensor at a time, so a
 * merged multi-gigabyte model never sits in memory whole.
 *
 * Every file is written atomically (lib/atomic-write.ts): a failure at any point leaves the
 * previous file as it was.
 */
import { endianness } from 'node:os';

import { writeFileAtomically, type Produce } from '../atomic-write.js';
import { InvalidArgumentError } from '../errors.js';

export type SafetensorsWriteDtype = 'F32' | 'F16' | 'BF16';

export interface SafetensorsWriteTensor {
  name: string;
  /** Outermost first, as in PyTorch. */
  shape: number[];
  dtype?: SafetensorsWriteDtype;
  /** The values, or a function giving them when the tensor's turn to be written comes. */
  data: Float32Array | (() => Float32Array | Promise<Float32Array>);
}

export interface SafetensorsWriteOptions {
  /** The dtype of tensors that name none (default F32). */
  dtype?: SafetensorsWriteDtype;
  /** String metadata (`__metadata__`); PyTorch writers put { format: 'pt' } there. */
  metadata?: Record<string, string>;
}

const bytesPerValue: Record<SafetensorsWriteDtype, number> = { F32: 4, F16: 2, BF16: 2 };

const littleEndian = endianness() === 'LE';
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bfloat16 bits of a float's bits: round to nearest even; NaN becomes 0x7fc0, as in PyTorch. */
export function bf16BitsOf(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** IEEE half bits of a float's bits: round to nearest even, overflow to ±inf, gradual underflow. */
export function f16BitsOf(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | (mant ? 0x7e00 : 0x7c00);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    // Subnormal half: shift the mantissa (with its implicit 1) right, rounding to nearest even.
    const m = mant | 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rest > mid || (rest === mid && half & 1)) half++;
    return sign | half;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to inf).
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
  return sign | h;
}

/** The stored bytes of f32 values in `dtype`, little-endian. */
export function encodeValues(values: Float32Array, dtype: SafetensorsWriteDtype): Buffer {
  if (dtype === 'F32') {
    if (littleEndian) return Buffer.from(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    const out = Buffer.allocUnsafe(values.length * 4);
    for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i], i * 4);
    return out;
  }
  const out = Buffer.allocUnsafe(values.length * 2);
  const convert = dtype === 'BF16' ? bf16BitsOf : f16BitsOf;
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i];
    out.writeUInt16LE(convert(u32[0]), i * 2);
  }
  return out;
}

function elementCount(t: SafetensorsWriteTensor): number {
  if (!Array.isArray(t.shape) || t.shape.some((d) => !Number.isSafeInteger(d) || d < 0))
    throw new InvalidArgumentError(`safetensors tensor '${t.name}': shape [${String(t.shape)}] must be whole numbers ≥ 0`);
  return t.shape.reduce((a, b) => a * b, 1);
}

/** The header (length prefix and padded JSON) of a file holding `tensors`, in this order. */
export function safetensorsHeader(tensors: SafetensorsWriteTensor[], options: SafetensorsWriteOptions = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (options.metadata) header.__metadata__ = options.metadata;
  const seen = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (typeof t.name !== 'string' || t.name === '' || t.name === '__metadata__')
      throw new InvalidArgumentError(`safetensors tensor name ${JSON.stringify(t.name)} is not allowed`);
    if (seen.has(t.name)) throw new InvalidArgumentError(`safetensors tensor '${t.name}' is given twice`);
    seen.add(t.name);
    const dtype = t.dtype ?? options.dtype ?? 'F32';
    if (!(dtype in bytesPerValue)) throw new InvalidArgumentError(`safetensors dtype ${String(dtype)} cannot be written; use F32, F16 or BF16`);
    const bytes = elementCount(t) * bytesPerValue[dtype];
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([length, Buffer.from(json, 'utf8')]);
}

/** Writes a safetensors file atomically; tensors are stored in the order given. */
export async function writeSafetensors(path: string, tensors: SafetensorsWriteTensor[], options: SafetensorsWriteOptions = {}): Promise<void> {
  await writeFileAtomically(path, safetensorsContents(tensors, options));
}

/** The contents of a safetensors file, for writeFilesAtomically; tensors in the order given. */
export function safetensorsContents(tensors: SafetensorsWriteTensor[], options: SafetensorsWriteOptions = {}): Produce {
  const header = safetensorsHeader(tensors, options);
  return async (write) => {
    await write(header);
    for (const t of tensors) {
      const values = typeof t.data === 'function' ? await t.data() : t.data;
      if (!ArrayBuffer.isView(values) || values.BYTES_PER_ELEMENT !== 4 || values.length !== elementCount(t))
        throw new InvalidArgumentError(`safetensors tensor '${t.name}': ${values?.length ?? 'no'} values for shape [${t.shape.join(', ')}]`);
      await write(encodeValues(values, t.dtype ?? options.dtype ?? 'F32'));
    }
  };
}
