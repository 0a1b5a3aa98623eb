import { native } from '../../lib/native.js';
import { Rng } from '../reference/ops.js';

const ops = native().ops('cpu');

describe('residual add', () => {
  it('adds x into y elementwise (exactly: one float32 addition each)', () => {
    const rng = new Rng(2);
    const n = 70001;
    const y = rng.normals(n);
    const x = rng.normals(n);
    const got = ops.addInplace(y, x);
    expect(Array.from(got)).toEqual(Array.from(y, (v, i) => Math.fround(v + x[i])));
  });
});

describe('scale in place (the embedding scale)', () => {
  it('multiplies every element by the scale, rounded to float32 first (one float32 product each)', () => {
    const rng = new Rng(3);
    const n = 40001;
    const x = rng.normals(n);
    const s = Math.sqrt(3072);
    const got = ops.scaleInplace(x, s);
    expect(Array.from(got)).toEqual(Array.from(x, (v) => Math.fround(v * Math.fround(s))));
  });
});
