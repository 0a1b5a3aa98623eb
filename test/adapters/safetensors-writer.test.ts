/**
 * The safetensors writer: the byte layout, exact F32, and F16 / BF16 rounding checked against a
 * brute-force reference (the nearest representable value, ties to the even code).
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { bf16BitsOf, encodeValues, f16BitsOf, writeSafetensors } from '../../lib/formats/safetensors-writer.js';

function bitsOf(x: number): number {
  return new Uint32Array(Float32Array.of(x).buffer)[0];
}

function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

function bf16Value(h: number): number {
  return new Float32Array(Uint32Array.of(h << 16).buffer)[0];
}

/** Round to nearest over a sorted table of (value, code) for the finite non-negative codes, ties to even. */
function nearestCode(x: number, table: { value: number; code: number }[], infCode: number, overflowAt: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= overflowAt) return sign | infCode;
  let lo = 0, hi = table.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (table[mid].value <= a) lo = mid;
    else hi = mid;
  }
  const below = table[lo], above = table[hi];
  const dBelow = a - below.value, dAbove = above.value - a;
  const pick = dBelow < dAbove ? below : dAbove < dBelow ? above : below.code % 2 === 0 ? below : above;
  return sign | pick.code;
}

const halfTable = Array.from({ length: 0x7c00 }, (_, code) => ({ code, value: halfValue(code) }));
const bf16Table = Array.from({ length: 0x7f80 }, (_, code) => ({ code, value: bf16Value(code) }));

function sampleValues(): Float32Array {
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
  const values: number[] = [0, -0, 1, -1, 65504, 65519.99, 65520, -70000, 6e-8, 3e-8, 2.9e-8, 1e-10, 2 ** -14, 2 ** -24, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 3.4e38];
  for (let i = 0; i < 3000; i++) values.push((rnd() - 0.5) * 10 ** (rnd() * 12 - 8));
  // Exact ties: values halfway between two codes (in both formats).
  for (let i = 0; i < 50; i++) {
    const h = 0x3c00 + i;
    values.push((halfValue(h) + halfValue(h + 1)) / 2);
    const b = 0x3f80 + i;
    values.push((bf16Value(b) + bf16Value(b + 1)) / 2);
  }
  return Float32Array.from(values);
}

describe('the safetensors writer', () => {
  it('rounds to F16 and BF16 as the nearest representable value, ties to even', () => {
    const values = sampleValues();
    for (const x of values) {
      expect(f16BitsOf(bitsOf(x))).toBe(nearestCode(x, halfTable, 0x7c00, 65520));
      // bf16 overflows past the largest finite value plus half an ulp.
      expect(bf16BitsOf(bitsOf(x))).toBe(nearestCode(x, bf16Table, 0x7f80, bf16Value(0x7f7f) + 2 ** 119));
    }
    expect(f16BitsOf(bitsOf(NaN)) & 0x7c00).toBe(0x7c00);
    expect(f16BitsOf(bitsOf(NaN)) & 0x3ff).not.toBe(0);
    expect(bf16BitsOf(bitsOf(NaN))).toBe(0x7fc0);
    expect(f16BitsOf(bitsOf(-Infinity))).toBe(0xfc00);
    expect(bf16BitsOf(bitsOf(Infinity))).toBe(0x7f80);
  });

  it('writes the header, padding and data the format specifies, F32 exactly', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'diffuse-st-'));
    const a = Float32Array.from({ length: 6 }, (_, i) => Math.fround(Math.sin(i + 1) * 3));
    const b = Float32Array.of(1.5, -2.25, 1e-3);
    const c = Float32Array.of(0.1, -7, 3e5, 1e-6);
    await writeSafetensors(
      join(dir, 'x.safetensors'),
      [
        { name: 'a', shape: [2, 3], data: a },
        { name: 'b.weight', shape: [3], dtype: 'F16', data: async () => b },
        { name: 'c', shape: [2, 2], dtype: 'BF16', data: () => c },
      ],
      { metadata: { format: 'pt' } },
    );
    const bytes = await readFile(join(dir, 'x.safetensors'));
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const json = bytes.subarray(8, 8 + n).toString('utf8');
    expect(json).toMatch(/^\{.*\} *$/);
    expect(JSON.parse(json)).toEqual({
      __metadata__: { format: 'pt' },
      a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
      'b.weight': { dtype: 'F16', shape: [3], data_offsets: [24, 30] },
      c: { dtype: 'BF16', shape: [2, 2], data_offsets: [30, 38] },
    });
    const data = bytes.subarray(8 + n);
    expect(data.length).toBe(38);
    expect(Array.from({ length: 6 }, (_, i) => data.readFloatLE(4 * i))).toEqual(Array.from(a));
    expect(Array.from({ length: 3 }, (_, i) => halfValue(data.readUInt16LE(24 + 2 * i)))).toEqual([1.5, -2.25, halfValue(f16BitsOf(bitsOf(1e-3)))]);
    expect(Array.from({ length: 4 }, (_, i) => data.readUInt16LE(30 + 2 * i))).toEqual(Array.from(c, (x) => bf16BitsOf(bitsOf(x))));
    expect(encodeValues(a, 'F32')).toEqual(data.subarray(0, 24));
    await rm(dir, { recursive: true });
  });

  it('leaves the previous file whole when a write fails, and no temporary file behind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'diffuse-st-'));
    const path = join(dir, 'x.safetensors');
    await writeFile(path, 'previous');
    const failing = writeSafetensors(path, [
      { name: 'a', shape: [2], data: Float32Array.of(1, 2) },
      {
        name: 'b',
        shape: [1],
        data: () => {
          throw new Error('disk on fire');
        },
      },
    ]);
    await expect(failing).rejects.toThrow(/cannot write .*x\.safetensors \(disk on fire\)/);
    expect(await readFile(path, 'utf8')).toBe('previous');
    expect(await readdir(dir)).toEqual(['x.safetensors']);
    await expect(writeSafetensors(path, [{ name: 'a', shape: [3], data: Float32Array.of(1, 2) }])).rejects.toThrow(/2 values for shape \[3\]/);
    await expect(writeSafetensors(path, [{ name: 'a', shape: [1], data: Float32Array.of(1) }, { name: 'a', shape: [1], data: Float32Array.of(1) }])).rejects.toThrow(/given twice/);
    expect(await readFile(path, 'utf8')).toBe('previous');
    await rm(dir, { recursive: true });
  });
});
