import { native } from '../../lib/native.js';
import { relErr, rope, Rng } from '../reference/ops.js';

const ops = native().ops('cpu');

function invFreq(headDim: number, theta: number): Float32Array {
  return Float32Array.from({ length: headDim / 2 }, (_, i) => theta ** ((-2 * i) / headDim));
}

describe('rotary embedding against a float64 reference', () => {
  for (const { headDim, heads, theta } of [
    { headDim: 64, heads: 9, theta: 100000 },
    { headDim: 16, heads: 3, theta: 10000 },
  ])
    it(`forward, head_dim ${headDim}, positions up to 32767`, () => {
      const rng = new Rng(headDim);
      const pos = Int32Array.from([0, 1, 2, 17, 511, 4096, 20000, 32767, 32766, 12345]);
      const x = rng.normals(pos.length * heads * headDim);
      const f = invFreq(headDim, theta);
      const got = ops.ropeForward(x, pos, f, heads, headDim);
      expect(relErr(got, rope(x, pos, f, heads, headDim))).toBeLessThan(1e-6);
      // Position 0 is the identity.
      expect(Array.from(got.subarray(0, heads * headDim))).toEqual(Array.from(x.subarray(0, heads * headDim)));
    });

  it('rotates only the first rotaryDim dims of each head, with cos and sin scaled (partial rotary, LongRoPE)', () => {
    const rng = new Rng(7);
    const heads = 3;
    const headDim = 16;
    const rot = 12;
    const scale = 1.19;
    const pos = Int32Array.from([0, 1, 5, 300, 4097, 20000]);
    const x = rng.normals(pos.length * heads * headDim);
    // LongRoPE frequencies: base^(-2i/rot) divided by per-frequency factors.
    const factors = [1, 1.5, 3, 8, 20, 50];
    const f = Float32Array.from({ length: rot / 2 }, (_, i) => 10000 ** ((-2 * i) / rot) / factors[i]);
    const got = ops.ropeForward(x, pos, f, heads, headDim, rot, scale);
    expect(relErr(got, rope(x, pos, f, heads, headDim, 1, rot, scale))).toBeLessThan(1e-6);
    for (let r = 0; r < pos.length * heads; r++)
      for (let i = rot; i < headDim; i++) expect(got[r * headDim + i]).toBe(x[r * headDim + i]);
    // Position 0: the rotary dims only scaled.
    for (let i = 0; i < rot; i++) expect(got[i]).toBeCloseTo(scale * x[i], 6);
    const y = rng.normals(x.length);
    const bty = ops.ropeBackward(y, pos, f, heads, headDim, rot, scale);
    expect(relErr(bty, rope(y, pos, f, heads, headDim, -1, rot, scale))).toBeLessThan(1e-6);
    let lhs = 0;
    let rhs = 0;
    let size = 0;
    for (let i = 0; i < x.length; ++i) {
      lhs += got[i] * y[i];
      rhs += x[i] * bty[i];
      size += Math.abs(x[i] * y[i]);
    }
    expect(Math.abs(lhs - rhs) / size).toBeLessThan(1e-6);
    expect(() => ops.ropeForward(x, pos, f, heads, headDim, 18, scale)).toThrow(/rot_dim/);
    expect(() => ops.ropeForward(x, pos, f, heads, headDim, 7, scale)).toThrow(/rot_dim/);
  });

  it('backward is the transpose: <rope(x), y> = <x, rope_backward(y)>, and matches the reference', () => {
    const rng = new Rng(3);
    const heads = 3;
    const headDim = 64;
    const pos = Int32Array.from({ length: 20 }, () => rng.int(32768));
    const n = pos.length * heads * headDim;
    const x = rng.normals(n);
    const y = rng.normals(n);
    const f = invFreq(headDim, 10000);
    const rx = ops.ropeForward(x, pos, f, heads, headDim);
    const bty = ops.ropeBackward(y, pos, f, heads, headDim);
    let lhs = 0;
    let rhs = 0;
    let scale = 0;
    for (let i = 0; i < n; ++i) {
      lhs += rx[i] * y[i];
      rhs += x[i] * bty[i];
      scale += Math.abs(x[i] * y[i]);
    }
    expect(Math.abs(lhs - rhs) / scale).toBeLessThan(1e-6);
    expect(relErr(bty, rope(y, pos, f, heads, headDim, -1))).toBeLessThan(1e-6);
  });
});
