import { native } from '../../lib/native.js';
import { relErr, Rng, swigluBackward, swigluForward } from '../reference/ops.js';

const ops = native().ops('cpu');

describe('SwiGLU against a float64 reference', () => {
  it('forward and backward over gates from -60 to 60 (the vector tail included)', () => {
    const rng = new Rng(11);
    const n = 100003;
    const gate = Float32Array.from(rng.normals(n, 4), (g, i) => (i % 97 === 0 ? 15 * g : g));
    const up = rng.normals(n);
    const dh = rng.normals(n);
    expect(relErr(ops.swigluForward(gate, up), swigluForward(gate, up))).toBeLessThan(1e-6);
    const got = ops.swigluBackward(dh, gate, up);
    const ref = swigluBackward(dh, gate, up);
    expect(relErr(got.dgate, ref.dgate)).toBeLessThan(1e-6);
    expect(relErr(got.dup, ref.dup)).toBeLessThan(1e-6);
  });

  it('is right element by element on a short input', () => {
    const gate = Float32Array.from([-30, -3, -0.5, 0, 0.25, 2, 9, 40, -88, 88, 1e-3]);
    const up = Float32Array.from(gate, (_, i) => 1 + 0.1 * i);
    const got = ops.swigluForward(gate, up);
    const ref = swigluForward(gate, up);
    got.forEach((h, i) => expect(Math.abs(h - ref[i])).toBeLessThanOrEqual(2e-7 * Math.abs(ref[i]) + 1e-30));
  });
});
