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
});
