import { native } from '../../lib/native.js';
import { gegluBackward, gegluForward, relErr, Rng } from '../reference/ops.js';

const ops = native().ops('cpu');

describe('GeGLU (tanh-GELU, Gemma) against a float64 reference', () => {
  it('forward and backward over gates from -60 to 60 (the vector tail included)', () => {
    const rng = new Rng(12);
    const n = 100003;
    const gate = Float32Array.from(rng.normals(n, 3), (g, i) => (i % 97 === 0 ? 15 * g : g));
    const up = rng.normals(n);
    const dh = rng.normals(n);
    expect(relErr(ops.gegluForward(gate, up), gegluForward(gate, up))).toBeLessThan(1e-6);
    const got = ops.gegluBackward(dh, gate, up);
    const ref = gegluBackward(dh, gate, up);
    expect(relErr(got.dgate, ref.dgate)).toBeLessThan(1e-6);
    expect(relErr(got.dup, ref.dup)).toBeLessThan(1e-6);
  });

  it('is right element by element, near zero and in both saturated tails', () => {
    const gate = Float32Array.from([-30, -3, -0.5, -1e-3, 0, 1e-4, 0.25, 2, 9, 40, -88, 88]);
    const up = Float32Array.from(gate, (_, i) => 1 + 0.1 * i);
    const got = ops.gegluForward(gate, up);
    const ref = gegluForward(gate, up);
    got.forEach((h, i) => expect(Math.abs(h - ref[i])).toBeLessThanOrEqual(3e-7 * Math.abs(ref[i]) + 1e-7 * Math.abs(gate[i] * up[i]) + 1e-30));
  });

  it('has a gate gradient that matches central finite differences', () => {
    const gate = Float64Array.from([-4, -1.3, -0.2, 0.05, 0.7, 1.9, 3.5]);
    const up = new Float64Array(gate.length).fill(1);
    const h = 1e-6;
    const fd = Array.from(gate, (g) => (gegluForward([g + h], [1])[0] - gegluForward([g - h], [1])[0]) / (2 * h));
    const got = ops.gegluBackward(Float32Array.from(up), Float32Array.from(gate), Float32Array.from(up)).dgate;
    expect(relErr(got, fd)).toBeLessThan(1e-5);
  });
});
