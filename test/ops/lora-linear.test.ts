import { native } from '../../lib/native.js';
import { type LinearCase, randomArray, refLinearBackward, refLinearForward, relError, rng } from '../reference/linear.js';

// fp32 against float64 on random inputs; the longest sums are over 130 rows or 200 features.
const TOLERANCE = 1e-5;

interface Shape {
  rows: number;
  inFeatures: number;
  outFeatures: number;
  rank: number;
  bias?: boolean;
}

function makeCase(s: Shape, next: () => number): LinearCase {
  const { rows, inFeatures, outFeatures, rank } = s;
  return {
    rows,
    inFeatures,
    outFeatures,
    w: randomArray(outFeatures * inFeatures, next),
    bias: s.bias ? randomArray(outFeatures, next) : undefined,
    rank,
    A: rank > 0 ? randomArray(rank * inFeatures, next) : undefined,
    B: rank > 0 ? randomArray(outFeatures * rank, next) : undefined,
    scale: rank > 0 ? 8 / rank : 1,
  };
}

const name = (s: Shape) => `rows=${s.rows} in=${s.inFeatures} out=${s.outFeatures} r=${s.rank}${s.bias ? ' bias' : ''}`;

// Ranks that divide no tile size (1, 3, 5) and SmolLM2's 16, no adapter, odd shapes, and
// shapes big enough for the packed path and two threads.
const shapes: Shape[] = [
  { rows: 1, inFeatures: 45, outFeatures: 70, rank: 3, bias: true },
  { rows: 37, inFeatures: 45, outFeatures: 70, rank: 1 },
  { rows: 37, inFeatures: 70, outFeatures: 45, rank: 5, bias: true },
  { rows: 130, inFeatures: 200, outFeatures: 96, rank: 16, bias: true },
  { rows: 130, inFeatures: 96, outFeatures: 200, rank: 3 },
  { rows: 9, inFeatures: 64, outFeatures: 48, rank: 16 },
  { rows: 130, inFeatures: 200, outFeatures: 96, rank: 0, bias: true },
  { rows: 5, inFeatures: 33, outFeatures: 17, rank: 0 },
];

describe('CPU LoRA linear', () => {
  const ops = native().ops('cpu');

  it.each(shapes.map((s) => [name(s), s] as const))('forward matches the unfused reference: %s', (_, s) => {
    const next = rng(s.rows * 31 + s.rank);
    const c = makeCase(s, next);
    const x = randomArray(s.rows * s.inFeatures, next);
    const { y, u } = ops.linearForward({ ...c, x });
    const ref = refLinearForward(c, x);
    expect(relError(y, ref.y)).toBeLessThanOrEqual(TOLERANCE);
    expect(u).toHaveLength(s.rows * s.rank);
    if (s.rank > 0) expect(relError(u, ref.u)).toBeLessThanOrEqual(TOLERANCE);
  });

  it.each(shapes.map((s) => [name(s), s] as const))('backward matches the unfused reference, overwriting: %s', (_, s) => {
    const next = rng(s.rows * 37 + s.rank);
    const c = makeCase(s, next);
    const x = randomArray(s.rows * s.inFeatures, next);
    const dy = randomArray(s.rows * s.outFeatures, next);
    const u = s.rank > 0 ? Float32Array.from(refLinearForward(c, x).u) : undefined;
    const got = ops.linearBackward({ ...c, x, dy, u });
    const ref = refLinearBackward(c, x, dy, u ?? []);
    expect(relError(got.dx, ref.dx)).toBeLessThanOrEqual(TOLERANCE);
    expect(relError(got.dA, ref.dA)).toBeLessThanOrEqual(TOLERANCE);
    expect(relError(got.dB, ref.dB)).toBeLessThanOrEqual(TOLERANCE);
    expect(got.dA).toHaveLength(s.rank * s.inFeatures);
  });

  it.each(shapes.map((s) => [name(s), s] as const))('backward accumulates onto dx, dA and dB: %s', (_, s) => {
    const next = rng(s.rows * 41 + s.rank);
    const c = makeCase(s, next);
    const x = randomArray(s.rows * s.inFeatures, next);
    const dy = randomArray(s.rows * s.outFeatures, next);
    const u = s.rank > 0 ? Float32Array.from(refLinearForward(c, x).u) : undefined;
    const init = {
      dx: randomArray(s.rows * s.inFeatures, next),
      dA: s.rank > 0 ? randomArray(s.rank * s.inFeatures, next) : undefined,
      dB: s.rank > 0 ? randomArray(s.outFeatures * s.rank, next) : undefined,
    };
    const got = ops.linearBackward({ ...c, x, dy, u, ...init });
    const ref = refLinearBackward(c, x, dy, u ?? [], init);
    expect(relError(got.dx, ref.dx)).toBeLessThanOrEqual(TOLERANCE);
    expect(relError(got.dA, ref.dA)).toBeLessThanOrEqual(TOLERANCE);
    expect(relError(got.dB, ref.dB)).toBeLessThanOrEqual(TOLERANCE);
  });
});
