import { LogprobArgs, native } from '../../lib/native.js';
import { LogprobProblem, logprobs, ObjectiveKind, relErr, Rng, sub, weightedLoss } from '../reference/ops.js';

const ops = native().ops('cpu');

/**
 * Random edges: `parents` distinct rows of a hidden block with 1..maxKids distinct child tokens
 * each. Tokens include the vocabulary's ends and values beside multiples of 16 and 256, where
 * the kernel's vectors and chunks meet.
 */
function makeProblem(seed: number, o: { rows: number; dim: number; vocab: number; parents: number; maxKids: number; kind: ObjectiveKind; beta?: number }): LogprobProblem {
  const rng = new Rng(seed);
  const hidden = rng.normals(o.rows * o.dim);
  const head = rng.normals(o.vocab * o.dim, 2.5 / Math.sqrt(o.dim));
  const rowPool = rng.shuffle(Array.from({ length: o.rows }, (_, i) => i));
  const parentRows = Int32Array.from(rowPool.slice(0, o.parents));
  const special = [0, o.vocab - 1, 15, 16, 255, 256, 257, 383, 384, 1023, 1024].filter((t) => t < o.vocab);
  const edgeParent: number[] = [];
  const edgeToken: number[] = [];
  for (let p = 0; p < o.parents; ++p) {
    const kids = 1 + rng.int(o.maxKids);
    const tokens = new Set<number>();
    while (tokens.size < kids) tokens.add(rng.uniform() < 0.3 ? special[rng.int(special.length)] : rng.int(o.vocab));
    for (const t of tokens) {
      edgeParent.push(p);
      edgeToken.push(t);
    }
  }
  // Edge order is not grouped by parent in general.
  const order = rng.shuffle(edgeParent.map((_, i) => i));
  return {
    hidden,
    head,
    vocab: o.vocab,
    dim: o.dim,
    parentRows,
    edgeParent: Int32Array.from(order.map((i) => edgeParent[i])),
    edgeToken: Int32Array.from(order.map((i) => edgeToken[i])),
    edgeWeight: Float32Array.from(order, () => 0.05 + rng.uniform()),
    objective: { kind: o.kind, beta: o.beta ?? 0.7 },
  };
}

function args(p: LogprobProblem): LogprobArgs {
  return {
    hidden: p.hidden as Float32Array,
    head: p.head as Float32Array,
    vocab: p.vocab,
    dim: p.dim,
    parentRows: p.parentRows as Int32Array,
    edgeParent: p.edgeParent as Int32Array,
    edgeToken: p.edgeToken as Int32Array,
    edgeWeight: p.edgeWeight as Float32Array,
    objective: p.objective,
    logitSoftcap: p.logitSoftcap,
  };
}

function run(p: LogprobProblem, dhidden0: Float32Array) {
  const fwd = ops.logprobsForward(args(p));
  const dhidden = ops.logprobsBackward({ ...args(p), parentStats: fwd.parentStats, edgeStats: fwd.edgeStats, dhidden: dhidden0 });
  return { ...fwd, dhidden };
}

const every = <T>(a: ArrayLike<T>, stride: number, offset: number) => Array.from({ length: a.length / stride }, (_, i) => a[i * stride + offset]);

describe('fused log-probabilities against full float64 logits', () => {
  const shapes = [
    { name: 'vocab 3001, 7 parents', rows: 12, dim: 64, vocab: 3001, parents: 7, maxKids: 5 },
    { name: 'vocab 1000, 1 parent', rows: 3, dim: 40, vocab: 1000, parents: 1, maxKids: 8 },
    { name: 'vocab 2053, 40 parents', rows: 50, dim: 32, vocab: 2053, parents: 40, maxKids: 3 },
  ];
  const objectives: { kind: ObjectiveKind; beta?: number; logitSoftcap?: number }[] = [
    { kind: 'ce' },
    { kind: 'gem-linear' },
    { kind: 'gem-logsigmoid' },
    { kind: 'gem-logsigmoid', beta: 1.3 },
    { kind: 'ce', logitSoftcap: 2 },
    { kind: 'gem-logsigmoid', logitSoftcap: 1.5 },
  ];
  for (const s of shapes)
    for (const o of objectives)
      it(`${o.kind}${o.beta ? ` (beta ${o.beta})` : ''}${o.logitSoftcap ? ` (logit soft-cap ${o.logitSoftcap})` : ''}, ${s.name}: edge log-probs, losses, statistics and dhidden`, () => {
        const p = { ...makeProblem(s.vocab + s.parents, { ...s, ...o }), logitSoftcap: o.logitSoftcap };
        const dhidden0 = new Rng(9).normals(s.rows * s.dim, 0.2);
        const got = run(p, dhidden0);
        const ref = logprobs(p);
        const gem = o.kind !== 'ce';
        expect(relErr(got.edgeLogp, ref.edgeLogp)).toBeLessThan(1e-5);
        expect(relErr(got.edgeLoss, ref.edgeLoss)).toBeLessThan(1e-5);
        expect(relErr(every(got.parentStats, 2, 0), ref.lse)).toBeLessThan(1e-5);
        if (gem) expect(relErr(every(got.parentStats, 2, 1), ref.lseBeta)).toBeLessThan(1e-5);
        expect(relErr(every(got.edgeStats, 2, 0), ref.zy)).toBeLessThan(1e-5);
        expect(relErr(every(got.edgeStats, 2, 1), ref.C)).toBeLessThan(1e-5);
        // The backward accumulates onto dhidden; rows that are no parent keep their values.
        expect(relErr(sub(got.dhidden, dhidden0), ref.dhidden)).toBeLessThan(1e-5);
        const parents = new Set(p.parentRows as Int32Array);
        for (let r = 0; r < s.rows; ++r)
          if (!parents.has(r)) expect(Array.from(got.dhidden.subarray(r * s.dim, (r + 1) * s.dim))).toEqual(Array.from(dhidden0.subarray(r * s.dim, (r + 1) * s.dim)));
      });

  for (const [kind, logitSoftcap] of [['ce', 0], ['gem-logsigmoid', 0], ['ce', 1.5], ['gem-linear', 2]] as const)
    it(`${kind}${logitSoftcap ? ` with logit soft-cap ${logitSoftcap}` : ''}: dhidden matches central finite differences of sum_e W_e loss_e in float64`, () => {
      const p = { ...makeProblem(31, { rows: 4, dim: 16, vocab: 300, parents: 3, maxKids: 4, kind }), logitSoftcap };
      const got = run(p, new Float32Array(4 * 16));
      const frozen = logprobs(p);
      const h = Float64Array.from(p.hidden);
      const fd: number[] = [];
      const picked: number[] = [];
      for (const row of p.parentRows as Int32Array)
        for (let d = 0; d < 16; d += 3) {
          const i = row * 16 + d;
          const x0 = h[i];
          h[i] = x0 + 1e-5;
          const up = weightedLoss(p, h, frozen);
          h[i] = x0 - 1e-5;
          const down = weightedLoss(p, h, frozen);
          h[i] = x0;
          fd.push((up - down) / 2e-5);
          picked.push(got.dhidden[i]);
        }
      expect(relErr(picked, fd)).toBeLessThan(1e-5);
    });

  it('agrees with the loss it reports: log-probs of all tokens of a parent sum to 1', () => {
    const vocab = 700;
    const p = makeProblem(3, { rows: 2, dim: 24, vocab, parents: 1, maxKids: 1, kind: 'ce' });
    const all = { ...args(p), edgeParent: new Int32Array(vocab), edgeToken: Int32Array.from({ length: vocab }, (_, i) => i), edgeWeight: new Float32Array(vocab).fill(1) };
    const { edgeLogp } = ops.logprobsForward(all);
    const total = edgeLogp.reduce((s, l) => s + Math.exp(l), 0);
    expect(Math.abs(total - 1)).toBeLessThan(1e-5);
  });
});
