/**
 * widen_range (what the GEMM's packing, the embedding and the LM head read stored weights
 * through) has vector copies per instruction set; each must give exactly the bits of the scalar
 * dequantize(): every f16 and bf16 bit pattern (subnormals, infinities, NaN payloads), and
 * random blocks of every GGUF type cut at random places. isa.test.ts runs this again on the
 * AVX2 and generic copies.
 */
import { native, type WeightDtype } from '../../lib/native.js';
import { rng } from '../reference/linear.js';

const blockValues: Record<string, number> = { Q8_0: 32, Q4_0: 32, Q4_1: 32, Q5_0: 32, Q5_1: 32, Q4_K: 256, Q5_K: 256, Q6_K: 256 };
const blockBytes: Record<string, number> = { Q8_0: 34, Q4_0: 18, Q4_1: 20, Q5_0: 22, Q5_1: 24, Q4_K: 144, Q5_K: 176, Q6_K: 210 };

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** The first index where two arrays differ bit for bit, or -1. */
function firstDifference(a: Float32Array, b: Float32Array): number {
  const x = bits(a), y = bits(b);
  if (x.length !== y.length) return Math.min(x.length, y.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

describe('widenRange', () => {
  it.each(['F16', 'BF16'] as WeightDtype[])('%s: every bit pattern, whole and from odd offsets', (type) => {
    const g = native();
    const row = new Uint8Array(new Uint16Array(Array.from({ length: 65536 }, (_, i) => i)).buffer);
    const all = g.dequantize(type, row, 65536);
    expect(firstDifference(g.widenRange(type, row, 0, 65536), all)).toBe(-1);
    for (const [c0, c1] of [[3, 40], [17, 18], [1000, 1031], [65530, 65536]])
      expect(firstDifference(g.widenRange(type, row, c0, c1), all.subarray(c0, c1))).toBe(-1);
  });

  it.each(Object.keys(blockValues) as WeightDtype[])('%s: random blocks, ranges cut anywhere', (type) => {
    const g = native();
    const r = rng(7);
    const blocks = 12, n = blocks * blockValues[type];
    const row = Uint8Array.from({ length: blocks * blockBytes[type] }, () => Math.floor(r() * 256));
    const all = g.dequantize(type, row, n);
    expect(firstDifference(g.widenRange(type, row, 0, n), all)).toBe(-1);
    for (let t = 0; t < 40; t++) {
      const c0 = Math.floor(r() * n), c1 = c0 + Math.floor(r() * (n - c0 + 1));
      expect(firstDifference(g.widenRange(type, row, c0, c1), all.subarray(c0, c1))).toBe(-1);
    }
  });

  // The vector copies convert block scales with F16C, which quiets a signalling NaN where the
  // scalar bit trick keeps it; the scale's product or sum quiets it in both, so the bits agree.
  const scaleOffsets: Record<string, number[]> = { Q8_0: [0], Q4_0: [0], Q5_0: [0], Q4_1: [0, 2], Q5_1: [0, 2], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208] };
  const specialHalves = [0x7c01, 0x7d23, 0xfd55, 0x7e00, 0xfe01, 0x7c00, 0xfc00, 0x0001, 0x83ff, 0x0000, 0x8000, 0x7bff];
  it.each(Object.keys(blockValues) as WeightDtype[])('%s: NaN (signalling and quiet), infinite, subnormal and zero scales', (type) => {
    const g = native();
    const r = rng(11);
    const offsets = scaleOffsets[type];
    const blocks = specialHalves.length * offsets.length, n = blocks * blockValues[type];
    const row = Uint8Array.from({ length: blocks * blockBytes[type] }, () => Math.floor(r() * 256));
    const view = new DataView(row.buffer);
    for (let b = 0; b < blocks; b++) {
      const special = specialHalves[b % specialHalves.length], which = Math.floor(b / specialHalves.length);
      offsets.forEach((o, i) => view.setUint16(b * blockBytes[type] + o, i === which ? special : 0x3c00, true));
    }
    expect(firstDifference(g.widenRange(type, row, 0, n), g.dequantize(type, row, n))).toBe(-1);
  });
});
