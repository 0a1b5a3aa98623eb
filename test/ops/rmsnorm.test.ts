import { native } from '../../lib/native.js';
import { relErr, Rng, rmsnormBackward, rmsnormForward, sub } from '../reference/ops.js';

const ops = native().ops('cpu');

describe('rmsnorm against a float64 reference', () => {
  for (const [rows, dim] of [
    [7, 576],
    [33, 37],
  ])
    it(`forward and backward, ${rows} x ${dim}`, () => {
      const rng = new Rng(rows * dim);
      const x = rng.normals(rows * dim, 3);
      const w = Float32Array.from(rng.normals(dim), (g) => 1 + 0.3 * g);
      const eps = 1e-5;
      const got = ops.rmsnormForward(x, w, rows, dim, eps);
      const ref = rmsnormForward(x, w, rows, dim, eps);
      expect(relErr(got.y, ref.y)).toBeLessThan(1e-6);
      expect(relErr(got.rstd, ref.rstd)).toBeLessThan(1e-6);
      // The backward adds onto the dx it is given.
      const dy = rng.normals(rows * dim);
      const dx0 = rng.normals(rows * dim, 0.1);
      const dx = ops.rmsnormBackward(dy, x, w, got.rstd, dx0, rows, dim);
      expect(relErr(sub(dx, dx0), rmsnormBackward(dy, x, w, rows, dim, eps))).toBeLessThan(1e-5);
    });

  it('uses eps inside the square root (tiny rows do not blow up)', () => {
    const x = new Float32Array(16).fill(1e-4);
    const w = new Float32Array(16).fill(1);
    const got = ops.rmsnormForward(x, w, 1, 16, 1e-5);
    expect(relErr(got.y, rmsnormForward(x, w, 1, 16, 1e-5).y)).toBeLessThan(1e-6);
  });
});
