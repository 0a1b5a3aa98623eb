/**
 * The GEMM with B kept in a storage type (bf16, f16, GGUF blocks) widens it inside its packing:
 * the result must be bit-identical to the same GEMM on B widened beforehand (native dequantize),
 * on every path (dot: few rows; direct: few rows, k-major B; packed), with rows cut by the
 * K blocks and column panels anywhere inside a block, with beta = 1, and with a K extension.
 */
import { native, type WeightDtype } from '../../lib/native.js';
import { rng } from '../reference/linear.js';

const blockValues: Record<WeightDtype, number> = { F32: 1, F16: 1, BF16: 1, Q8_0: 32, Q4_0: 32, Q4_1: 32, Q5_0: 32, Q5_1: 32, Q4_K: 256, Q5_K: 256, Q6_K: 256 };
const blockBytes: Record<WeightDtype, number> = { F32: 4, F16: 2, BF16: 2, Q8_0: 34, Q4_0: 18, Q4_1: 20, Q5_0: 22, Q5_1: 24, Q4_K: 144, Q5_K: 176, Q6_K: 210 };
// Where each block's f16 scales sit: random bits there could be Inf / NaN, so they get a
// random small normal half instead (any other byte pattern is a valid block).
const halfScales: Record<WeightDtype, number[]> = { F32: [], F16: [], BF16: [], Q8_0: [0], Q4_0: [0], Q4_1: [0, 2], Q5_0: [0], Q5_1: [0, 2], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208] };

/** Random blocks for rows x cols values: quantize() for the plain types, raw bytes for the rest. */
function storedRows(type: WeightDtype, rows: number, cols: number, seed: number): Uint8Array {
  const r = rng(seed);
  if (type === 'F16' || type === 'BF16') return native().quantize(type, Float32Array.from({ length: rows * cols }, () => 2 * r() - 1));
  const blocks = (rows * cols) / blockValues[type];
  const bytes = Uint8Array.from({ length: blocks * blockBytes[type] }, () => Math.floor(r() * 256));
  for (let b = 0; b < blocks; b++)
    for (const at of halfScales[type]) {
      bytes[b * blockBytes[type] + at] = Math.floor(r() * 256);
      bytes[b * blockBytes[type] + at + 1] = 0x18 + Math.floor(r() * 8); // 2^-9 .. 2^-6, either sign: 0x18..0x1f
    }
  return bytes;
}

const types: WeightDtype[] = ['F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'];
// M: dot (<= 16 rows, nt), direct (<= 2 register tiles, nn), packed; N and K cut blocks and panels.
const shapes: [number, number, number][] = [
  [1, 37, 512],
  [5, 300, 256],
  [16, 61, 768],
  [7, 768, 256],
  [40, 600, 512],
  [24, 700, 256],
];

/** Bit for bit (and fast on long arrays). */
function identical(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('GEMM with a stored B', () => {
  it.each(types)('%s: bit-identical to the GEMM on B widened at load, nt and nn, every path', (type) => {
    const g = native();
    let seed = 1;
    for (const [M, N, K] of shapes)
      for (const kind of ['nt', 'nn'] as const) {
        const [rows, cols] = kind === 'nt' ? [N, K] : [K, N];
        if (cols % blockValues[type] !== 0) continue;
        const bytes = storedRows(type, rows, cols, seed++);
        const widened = g.dequantize(type, bytes, rows * cols);
        const r = rng(seed++);
        const A = Float32Array.from({ length: M * K }, () => 2 * r() - 1);
        const C = Float32Array.from({ length: M * N }, () => 2 * r() - 1);
        const expected = g.gemm(kind, M, N, K, A, widened);
        expect(expected.every(Number.isFinite)).toBe(true);
        expect(identical(g.gemm(kind, M, N, K, A, { dtype: type, bytes }), expected)).toBe(true);
        expect(identical(g.gemm(kind, M, N, K, A, { dtype: type, bytes }, C), g.gemm(kind, M, N, K, A, widened, C))).toBe(true);
        // With a LoRA-like K extension packed after the stored segment.
        const K2 = 4;
        const extra = { A2: Float32Array.from({ length: M * K2 }, () => 2 * r() - 1), B2: Float32Array.from({ length: N * K2 }, () => 2 * r() - 1), K2 };
        expect(identical(g.gemm(kind, M, N, K, A, { dtype: type, bytes }, C, extra), g.gemm(kind, M, N, K, A, widened, C, extra))).toBe(true);
      }
  });

  it('names a stored B that does not fit', () => {
    const g = native();
    const A = new Float32Array(4 * 64);
    expect(() => g.gemm('nt', 4, 3, 64, A, { dtype: 'Q8_0', bytes: new Uint8Array(10) })).toThrow(/too few bytes for B/);
    expect(() => g.gemm('nt', 4, 3, 48, A, { dtype: 'Q8_0', bytes: new Uint8Array(1000) })).toThrow(/not whole blocks/);
    expect(() => g.gemm('tn', 4, 3, 64, A, { dtype: 'Q8_0', bytes: new Uint8Array(1000) })).toThrow(/'nt' and 'nn'/);
  });
});
