import { native, NativeAdamW } from '../../lib/native.js';
import { adamwStep, relErr, Rng, sub } from '../reference/ops.js';

const ops = native().ops('cpu');

describe('AdamW against a float64 transcription of torch.optim.AdamW', () => {
  it('tracks the reference over several steps with weight decay, bias correction and grad_scale', () => {
    const rng = new Rng(4);
    const n = 40009;
    let param: Float32Array = rng.normals(n, 0.1);
    let m: Float32Array = new Float32Array(n);
    let v: Float32Array = new Float32Array(n);
    const refParam = Float64Array.from(param);
    const refM = new Float64Array(n);
    const refV = new Float64Array(n);
    const schedule: Partial<NativeAdamW>[] = [
      { lr: 0.02, gradScale: 1 },
      { lr: 0.02, gradScale: 0.5 },
      { lr: 0.01, gradScale: 0.8 },
      { lr: 0.03, gradScale: 1 },
      { lr: 0.02, gradScale: 0.25 },
    ];
    schedule.forEach((s, i) => {
      const h = { lr: s.lr!, beta1: 0.9, beta2: 0.999, eps: 1e-5, weightDecay: 0.01, step: i + 1, gradScale: s.gradScale! };
      const grad = rng.normals(n, 0.5 + i);
      const before = Float64Array.from(refParam);
      const got = ops.adamwUpdate(param, grad, m, v, h);
      adamwStep(refParam, grad, refM, refV, h);
      // The update itself, not just the (much larger) parameters, must match.
      expect(relErr(sub(got.param, before), sub(refParam, before))).toBeLessThan(1e-5);
      expect(relErr(got.param, refParam)).toBeLessThan(1e-6);
      expect(relErr(got.m, refM)).toBeLessThan(1e-6);
      expect(relErr(got.v, refV)).toBeLessThan(1e-6);
      ({ param, m, v } = got);
    });
  });

  it('sums squares in double', () => {
    const rng = new Rng(5);
    const x = rng.normals(1_000_003, 3);
    let ref = 0;
    for (const a of x) ref += a * a;
    expect(Math.abs(ops.sumSquares(x) - ref) / ref).toBeLessThan(1e-12);
  });

  it('sums the squares of many tensors in one pass, empty ones included, as the sum of each', () => {
    const rng = new Rng(6);
    // More tensors than one CUDA launch takes (128), of mixed sizes, as a 13B adapter's 560.
    const xs = Array.from({ length: 300 }, (_, i) => rng.normals(i % 7 === 0 ? 0 : 1 + ((i * 37) % 500), 1 + (i % 5)));
    let ref = 0;
    for (const x of xs) for (const a of x) ref += a * a;
    const many = ops.sumSquares(xs);
    expect(Math.abs(many - ref) / ref).toBeLessThan(1e-12);
    expect(many).toBe(xs.reduce((s, x) => s + ops.sumSquares(x), 0));
    expect(ops.sumSquares([])).toBe(0);
    expect(ops.sumSquares([new Float32Array(0)])).toBe(0);
  });
});
