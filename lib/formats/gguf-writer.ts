/**
 * Writing GGUF v3 files: string, u32 and f32 metadata and F32/F16 tensors, laid out as
 * gguf-py's GGUFWriter lays them out — header, metadata, tensor infos (dims innermost first,
 * offsets relative to the data section), then each tensor's data padded to the alignment (32).
 * The file is written atomically (a temporary file renamed over the target).
 */
import { writeFileAtomically } from '../atomic-write.js';
import { f16BitsOf } from './safetensors-writer.js';

export type GgufMeta = { type: 'string'; value: string } | { type: 'u32'; value: number } | { type: 'f32'; value: number };

export interface GgufTensorOut {
  name: string;
  /** Outermost first (row-major [rows, columns]); written reversed as GGUF dims. */
  shape: number[];
  data: Float32Array;
  type: 'F32' | 'F16';
}

const ALIGNMENT = 32;
const typeIds = { u32: 4, f32: 6, string: 8 } as const;
const ggmlIds = { F32: 0, F16: 1 } as const;

function stringBytes(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(bytes.length));
  return Buffer.concat([len, bytes]);
}

function tensorBytes(t: GgufTensorOut): Buffer {
  if (t.type === 'F32') return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const bits = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
  const out = Buffer.alloc(t.data.length * 2);
  for (let i = 0; i < bits.length; i++) out.writeUInt16LE(f16BitsOf(bits[i]), i * 2);
  return out;
}

/** The bytes of a GGUF v3 file holding this metadata (in order) and these tensors (in order). */
export function encodeGgufFile(metadata: [string, GgufMeta][], tensors: GgufTensorOut[]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(24);
  head.write('GGUF', 0, 'latin1');
  head.writeUInt32LE(3, 4);
  head.writeBigUInt64LE(BigInt(tensors.length), 8);
  head.writeBigUInt64LE(BigInt(metadata.length), 16);
  parts.push(head);
  for (const [key, v] of metadata) {
    parts.push(stringBytes(key));
    const type = Buffer.alloc(4);
    type.writeUInt32LE(typeIds[v.type]);
    parts.push(type);
    if (v.type === 'string') parts.push(stringBytes(v.value));
    else {
      const b = Buffer.alloc(4);
      if (v.type === 'u32') b.writeUInt32LE(v.value);
      else b.writeFloatLE(v.value);
      parts.push(b);
    }
  }
  const pad = (n: number) => Math.ceil(n / ALIGNMENT) * ALIGNMENT;
  const datas = tensors.map(tensorBytes);
  let offset = 0;
  tensors.forEach((t, i) => {
    parts.push(stringBytes(t.name));
    const info = Buffer.alloc(4 + 8 * t.shape.length + 4 + 8);
    info.writeUInt32LE(t.shape.length, 0);
    t.shape
      .slice()
      .reverse()
      .forEach((d, k) => info.writeBigUInt64LE(BigInt(d), 4 + 8 * k));
    info.writeUInt32LE(ggmlIds[t.type], 4 + 8 * t.shape.length);
    info.writeBigUInt64LE(BigInt(offset), 8 + 8 * t.shape.length);
    parts.push(info);
    offset = pad(offset + datas[i].length);
  });
  const headerLength = parts.reduce((s, p) => s + p.length, 0);
  parts.push(Buffer.alloc(pad(headerLength) - headerLength));
  for (const d of datas) {
    parts.push(d);
    parts.push(Buffer.alloc(pad(d.length) - d.length));
  }
  return Buffer.concat(parts);
}

export async function writeGgufFile(path: string, metadata: [string, GgufMeta][], tensors: GgufTensorOut[]): Promise<void> {
  const bytes = encodeGgufFile(metadata, tensors);
  await writeFileAtomically(path, (write) => write(bytes));
}
