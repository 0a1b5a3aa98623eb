import { native } from '../../lib/native.js';
import { attentionBackward, attentionForward, AttentionProblem, relErr, Rng } from '../reference/ops.js';

const ops = native().ops('cpu');

/**
 * Key lists of a random forest, one per row: each segment is a prompt chain (row i of the
 * prompt sees prompt rows 0..i) with a trie hanging off its last row (a node sees the whole
 * prompt, its ancestors and itself). Lists are root first, as the model builds them (runs of
 * consecutive rows that rows share, which the kernel exploits), or shuffled: the kernel must not
 * rely on order.
 */
function forest(rng: Rng, segments: { prompt: number; nodes: number }[], shuffled: boolean): number[][] {
  const lists: number[][] = [];
  let base = 0;
  for (const seg of segments) {
    const prompt = Array.from({ length: seg.prompt }, (_, i) => base + i);
    for (let i = 0; i < seg.prompt; ++i) lists.push(prompt.slice(0, i + 1));
    const paths: number[][] = [];
    for (let n = 0; n < seg.nodes; ++n) {
      const row = base + seg.prompt + n;
      const parent = n === 0 || rng.uniform() < 0.25 ? -1 : rng.int(n);
      const path = parent < 0 ? [row] : [...paths[parent], row];
      paths.push(path);
      lists.push([...prompt, ...path]);
    }
    base += seg.prompt + seg.nodes;
  }
  return shuffled ? lists.map((l) => rng.shuffle([...l])) : lists;
}

/** The attention problem of the given query rows over all rows of the forest. */
function problem(lists: number[][], queries: number[], qHeads: number, kvHeads: number, headDim: number): AttentionProblem {
  const keyOffsets = new Int32Array(queries.length + 1);
  queries.forEach((r, i) => (keyOffsets[i + 1] = keyOffsets[i] + lists[r].length));
  return {
    qRows: queries.length,
    kvRows: lists.length,
    qHeads,
    kvHeads,
    headDim,
    scale: 1 / Math.sqrt(headDim),
    keyOffsets,
    keyRows: Int32Array.from(queries.flatMap((r) => lists[r])),
  };
}

function inputs(rng: Rng, p: AttentionProblem) {
  const nq = p.qRows * p.qHeads * p.headDim;
  const nkv = p.kvRows * p.kvHeads * p.headDim;
  return { q: rng.normals(nq, 1.5), k: rng.normals(nkv, 1.5), v: rng.normals(nkv), dout: rng.normals(nq) };
}

function runKernel(p: AttentionProblem, x: ReturnType<typeof inputs>) {
  const fwd = ops.attentionForward(x.q, x.k, x.v, p.keyOffsets, p.keyRows, p);
  const bwd = ops.attentionBackward(x.dout, x.q, x.k, x.v, fwd.out, fwd.lse, p.keyOffsets, p.keyRows, p);
  return { ...fwd, ...bwd };
}

describe('attention (tree-masked, GQA) against a float64 reference', () => {
  const cases = [
    { name: 'all rows, root-first lists, head_dim 64, 9/3 heads', qHeads: 9, kvHeads: 3, headDim: 64, cached: false, shuffled: false },
    { name: 'all rows, shuffled lists, head_dim 64, 6/2 heads', qHeads: 6, kvHeads: 2, headDim: 64, cached: false, shuffled: true },
    { name: 'KV-cached queries, root-first lists, head_dim 24, 9/3 heads', qHeads: 9, kvHeads: 3, headDim: 24, cached: true, shuffled: false },
    { name: 'all rows, root-first lists, head_dim 32, 14/2 heads (4 + 3 heads a tile)', qHeads: 14, kvHeads: 2, headDim: 32, cached: false, shuffled: false },
    { name: 'all rows, shuffled lists, head_dim 16, 8/4 heads', qHeads: 8, kvHeads: 4, headDim: 16, cached: false, shuffled: true },
    { name: 'KV-cached queries, shuffled lists, head_dim 80, 3/3 heads', qHeads: 3, kvHeads: 3, headDim: 80, cached: true, shuffled: true },
    { name: 'soft-capped scores (Gemma 2, cap 1.5), root-first lists, head_dim 32, 4/2 heads', qHeads: 4, kvHeads: 2, headDim: 32, cached: false, shuffled: false, softcap: 1.5 },
    { name: 'soft-capped scores, KV-cached, shuffled lists, head_dim 24, 6/3 heads', qHeads: 6, kvHeads: 3, headDim: 24, cached: true, shuffled: true, softcap: 2 },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const rng = new Rng(1000 + c.headDim + c.qHeads);
      const lists = forest(rng, [
        { prompt: 40, nodes: 60 },
        { prompt: 9, nodes: 25 },
        { prompt: 90, nodes: 12 },
      ], c.shuffled);
      // Cached: the new rows are the last trie's nodes; the first segment is read by no query.
      const queries = c.cached ? Array.from({ length: 12 }, (_, i) => lists.length - 12 + i) : lists.map((_, i) => i);
      const p = { ...problem(lists, queries, c.qHeads, c.kvHeads, c.headDim), softcap: c.softcap };
      const x = inputs(rng, p);
      const got = runKernel(p, x);
      const ref = attentionForward(x.q, x.k, x.v, p);
      const grad = attentionBackward(x.dout, x.q, x.k, x.v, p);
      expect(relErr(got.out, ref.out)).toBeLessThan(1e-5);
      expect(relErr(got.lse, ref.lse)).toBeLessThan(1e-5);
      expect(relErr(got.dq, grad.dq)).toBeLessThan(1e-5);
      expect(relErr(got.dk, grad.dk)).toBeLessThan(1e-5);
      expect(relErr(got.dv, grad.dv)).toBeLessThan(1e-5);
      if (c.cached) {
        const read = new Set(p.keyRows);
        const width = c.kvHeads * c.headDim;
        let unread = 0;
        let nonzero = 0;
        for (let r = 0; r < p.kvRows; ++r) {
          if (read.has(r)) continue;
          ++unread;
          for (let d = 0; d < width; ++d) nonzero += Number(got.dk[r * width + d] !== 0) + Number(got.dv[r * width + d] !== 0);
        }
        expect(unread).toBeGreaterThan(100);
        expect(nonzero).toBe(0);
      }
    });
  }

  for (const [shuffled, softcap] of [[false, 0], [true, 0], [false, 1.5]] as const) {
    it(`has backward gradients that match central finite differences in float64 (${shuffled ? 'shuffled' : 'root-first'} lists${softcap ? `, soft-cap ${softcap}` : ''})`, () => {
      const rng = new Rng(77);
      const lists = forest(rng, [
        { prompt: 18, nodes: 9 },
        { prompt: 4, nodes: 5 },
      ], shuffled);
      const p = { ...problem(lists, lists.map((_, i) => i), 6, 2, 16), softcap };
      const x = inputs(rng, p);
      const got = runKernel(p, x);
      const ref = attentionBackward(x.dout, x.q, x.k, x.v, p);
      const loss = (q: Float64Array, k: Float64Array, v: Float64Array) => {
        const { out } = attentionForward(q, k, v, p);
        let s = 0;
        for (let i = 0; i < out.length; ++i) s += out[i] * x.dout[i];
        return s;
      };
      const h = 1e-6;
      for (const name of ['q', 'k', 'v'] as const) {
        const base = { q: Float64Array.from(x.q), k: Float64Array.from(x.k), v: Float64Array.from(x.v) };
        const kernelGrad = name === 'q' ? got.dq : name === 'k' ? got.dk : got.dv;
        const refGrad = name === 'q' ? ref.dq : name === 'k' ? ref.dk : ref.dv;
        const fd: number[] = [];
        const picked: number[] = [];
        const refPicked: number[] = [];
        for (let n = 0; n < 24; ++n) {
          const i = rng.int(base[name].length);
          const x0 = base[name][i];
          base[name][i] = x0 + h;
          const up = loss(base.q, base.k, base.v);
          base[name][i] = x0 - h;
          const down = loss(base.q, base.k, base.v);
          base[name][i] = x0;
          fd.push((up - down) / (2 * h));
          picked.push(kernelGrad[i]);
          refPicked.push(refGrad[i]);
        }
        expect(relErr(refPicked, fd)).toBeLessThan(1e-7);
        expect(relErr(picked, fd)).toBeLessThan(1e-5);
      }
    });
  }

  it('gives a row with no keys zero output, -inf lse and zero dq; one key passes v through', () => {
    const p: AttentionProblem = { qRows: 2, kvRows: 1, qHeads: 2, kvHeads: 1, headDim: 16, scale: 0.25, keyOffsets: Int32Array.from([0, 0, 1]), keyRows: Int32Array.from([0]) };
    const x = inputs(new Rng(5), p);
    const got = runKernel(p, x);
    expect(Array.from(got.out.subarray(0, 32))).toEqual(new Array(32).fill(0));
    expect(Array.from(got.dq.subarray(0, 32))).toEqual(new Array(32).fill(0));
    expect(got.lse[0]).toBe(-Infinity);
    expect(relErr(got.out.subarray(32), [...x.v, ...x.v])).toBeLessThan(1e-6);
  });
});
