/**
 * Every backend op on the GPU against the CPU backend (itself tested against float64
 * references), through native().ops: bf16 tolerance 1e-2, 5e-2 where a long bf16 reduction
 * with cancellation justifies it (said at the check).
 */
import { native, type NativeOps } from '../../lib/native.js';
import { describeCuda, forest, ints, normals, relError, rng, uniforms } from './helpers.js';

describeCuda('CUDA ops match the CPU backend', () => {
  let cpu: NativeOps;
  let gpu: NativeOps;
  const next = rng(1234);
  beforeAll(() => {
    cpu = native().ops('cpu');
    gpu = native().ops('cuda');
  });

  it('names the device', () => {
    expect(gpu.device()).toMatch(/^cuda:/);
  });

  it('embedding', () => {
    const table = normals(next, 500 * 96);
    const tokens = ints(next, 40, 0, 499);
    expect(relError(gpu.embeddingForward(tokens, table, 96), cpu.embeddingForward(tokens, table, 96))).toBe(0);
  });

  it('rmsnorm forward and backward', () => {
    const rows = 17;
    const dim = 320;
    const x = normals(next, rows * dim, 2);
    const w = Float32Array.from(normals(next, dim, 0.1), (v) => 1 + v);
    const c = cpu.rmsnormForward(x, w, rows, dim, 1e-5);
    const g = gpu.rmsnormForward(x, w, rows, dim, 1e-5);
    expect(relError(g.y, c.y)).toBeLessThan(1e-2);
    expect(relError(g.rstd, c.rstd)).toBeLessThan(1e-2);
    const dy = normals(next, rows * dim);
    const dx = normals(next, rows * dim);
    expect(relError(gpu.rmsnormBackward(dy, x, w, c.rstd, dx, rows, dim), cpu.rmsnormBackward(dy, x, w, c.rstd, dx, rows, dim))).toBeLessThan(1e-2);
  });

  it.each([0, 4])('LoRA linear forward and backward, rank %i', (rank) => {
    const rows = 45;
    const inFeatures = 128;
    const outFeatures = 96;
    const args = {
      x: normals(next, rows * inFeatures),
      w: normals(next, outFeatures * inFeatures, 0.05),
      bias: normals(next, outFeatures, 0.5),
      A: uniforms(next, Math.max(rank, 1) * inFeatures, -0.09, 0.09),
      B: normals(next, outFeatures * Math.max(rank, 1), 0.2),
      rank,
      scale: 2,
      rows,
      inFeatures,
      outFeatures,
    };
    const c = cpu.linearForward(args);
    const g = gpu.linearForward(args);
    expect(relError(g.y, c.y)).toBeLessThan(1e-2);
    if (rank > 0) expect(relError(g.u, c.u)).toBeLessThan(1e-2);
    const back = { ...args, dy: normals(next, rows * outFeatures), u: c.u, dx: normals(next, rows * inFeatures) };
    const cb = cpu.linearBackward(back);
    const gb = gpu.linearBackward(back);
    expect(relError(gb.dx, cb.dx)).toBeLessThan(1e-2);
    if (rank > 0) {
      expect(relError(gb.dA, cb.dA)).toBeLessThan(1e-2);
      expect(relError(gb.dB, cb.dB)).toBeLessThan(1e-2);
    }
  });

  it('rope forward and backward', () => {
    const heads = 5;
    const headDim = 64;
    const pos = ints(next, 30, 0, 4000);
    const x = normals(next, 30 * heads * headDim);
    const invFreq = Float32Array.from({ length: headDim / 2 }, (_, i) => 10000 ** (-2 * i / headDim));
    expect(relError(gpu.ropeForward(x, pos, invFreq, heads, headDim), cpu.ropeForward(x, pos, invFreq, heads, headDim))).toBeLessThan(1e-2);
    expect(relError(gpu.ropeBackward(x, pos, invFreq, heads, headDim), cpu.ropeBackward(x, pos, invFreq, heads, headDim))).toBeLessThan(1e-2);
  });

  it('rope on 3/4 of each head with scaled cos/sin (Phi-4-mini partial rotary, LongRoPE attention factor)', () => {
    const heads = 3;
    const headDim = 128;
    const rot = 96;
    const pos = ints(next, 30, 0, 140000);
    const x = normals(next, 30 * heads * headDim);
    const invFreq = Float32Array.from({ length: rot / 2 }, (_, i) => 10000 ** (-2 * i / rot) / (1 + i));
    const fwd = gpu.ropeForward(x, pos, invFreq, heads, headDim, rot, 1.19);
    expect(relError(fwd, cpu.ropeForward(x, pos, invFreq, heads, headDim, rot, 1.19))).toBeLessThan(1e-2);
    expect(relError(gpu.ropeBackward(x, pos, invFreq, heads, headDim, rot, 1.19), cpu.ropeBackward(x, pos, invFreq, heads, headDim, rot, 1.19))).toBeLessThan(1e-2);
    // The pass-through dims are the input, rounded to bf16 on the device.
    for (let r = 0; r < 30 * heads; r++)
      for (let i = rot; i < headDim; i++) expect(Math.abs(fwd[r * headDim + i] - x[r * headDim + i])).toBeLessThanOrEqual(Math.abs(x[r * headDim + i]) / 128);
  });

  it('soft-capped (Gemma 2) tree-masked attention forward and backward, windowed key lists', () => {
    const f = forest(next, 30, 40);
    const rows = f.parents.length;
    // The sliding window lives in the key lists the graph builds: keep each row's last 5 keys.
    const offsets = [0];
    const keys: number[] = [];
    for (let i = 0; i < rows; i++) {
      const list = Array.from(f.keyRows.subarray(f.keyOffsets[i], f.keyOffsets[i + 1]));
      keys.push(...list.slice(-5));
      offsets.push(keys.length);
    }
    const keyOffsets = Int32Array.from(offsets);
    const keyRows = Int32Array.from(keys);
    const shape = { qRows: rows, kvRows: rows, qHeads: 4, kvHeads: 2, headDim: 256, scale: 1 / 16, softcap: 1.5 };
    const q = normals(next, rows * 4 * 256, 2);
    const k = normals(next, rows * 2 * 256, 2);
    const v = normals(next, rows * 2 * 256);
    const c = cpu.attentionForward(q, k, v, keyOffsets, keyRows, shape);
    const g = gpu.attentionForward(q, k, v, keyOffsets, keyRows, shape);
    expect(relError(g.out, c.out)).toBeLessThan(1e-2);
    expect(relError(g.lse, c.lse)).toBeLessThan(1e-2);
    const dout = normals(next, rows * 4 * 256);
    const cb = cpu.attentionBackward(dout, q, k, v, c.out, c.lse, keyOffsets, keyRows, shape);
    const gb = gpu.attentionBackward(dout, q, k, v, c.out, c.lse, keyOffsets, keyRows, shape);
    expect(relError(gb.dq, cb.dq)).toBeLessThan(5e-2);
    expect(relError(gb.dk, cb.dk)).toBeLessThan(5e-2);
    expect(relError(gb.dv, cb.dv)).toBeLessThan(1e-2);
  });

  it('geglu forward and backward, and the embedding scale', () => {
    const n = 5003;
    const gate = normals(next, n, 2);
    const up = normals(next, n);
    const dh = normals(next, n);
    expect(relError(gpu.gegluForward(gate, up), cpu.gegluForward(gate, up))).toBeLessThan(1e-2);
    const c = cpu.gegluBackward(dh, gate, up);
    const g = gpu.gegluBackward(dh, gate, up);
    expect(relError(g.dgate, c.dgate)).toBeLessThan(1e-2);
    expect(relError(g.dup, c.dup)).toBeLessThan(1e-2);
    expect(relError(gpu.scaleInplace(gate, Math.sqrt(3072)), cpu.scaleInplace(gate, Math.sqrt(3072)))).toBeLessThan(1e-2);
  });

  it('tree-masked attention forward and backward (GQA)', () => {
    const f = forest(next, 37, 50);
    const rows = f.parents.length;
    const shape = { qRows: rows, kvRows: rows, qHeads: 6, kvHeads: 2, headDim: 64 };
    const q = normals(next, rows * 6 * 64);
    const k = normals(next, rows * 2 * 64);
    const v = normals(next, rows * 2 * 64);
    const c = cpu.attentionForward(q, k, v, f.keyOffsets, f.keyRows, shape);
    const g = gpu.attentionForward(q, k, v, f.keyOffsets, f.keyRows, shape);
    expect(relError(g.out, c.out)).toBeLessThan(1e-2);
    expect(relError(g.lse, c.lse)).toBeLessThan(1e-2);
    const dout = normals(next, rows * 6 * 64);
    const cb = cpu.attentionBackward(dout, q, k, v, c.out, c.lse, f.keyOffsets, f.keyRows, shape);
    const gb = gpu.attentionBackward(dout, q, k, v, c.out, c.lse, f.keyOffsets, f.keyRows, shape);
    // dq and dk sum ds = p (dp - D) terms, which cancel: 5e-2.
    expect(relError(gb.dq, cb.dq)).toBeLessThan(5e-2);
    expect(relError(gb.dk, cb.dk)).toBeLessThan(5e-2);
    expect(relError(gb.dv, cb.dv)).toBeLessThan(1e-2);
  });

  it('swiglu forward and backward, and the residual add', () => {
    const n = 5003;
    const gate = normals(next, n, 2);
    const up = normals(next, n);
    const dh = normals(next, n);
    expect(relError(gpu.swigluForward(gate, up), cpu.swigluForward(gate, up))).toBeLessThan(1e-2);
    const c = cpu.swigluBackward(dh, gate, up);
    const g = gpu.swigluBackward(dh, gate, up);
    expect(relError(g.dgate, c.dgate)).toBeLessThan(1e-2);
    expect(relError(g.dup, c.dup)).toBeLessThan(1e-2);
    expect(relError(gpu.addInplace(gate, up), cpu.addInplace(gate, up))).toBeLessThan(1e-2);
  });

  it.each([
    ['ce', 0],
    ['gem-linear', 0],
    ['gem-logsigmoid', 0],
    ['ce', 2],
    ['gem-logsigmoid', 2],
  ] as const)('fused log-probs forward and backward, %s, logit soft-cap %p', (kind, logitSoftcap) => {
    const rows = 20;
    const dim = 64;
    const vocab = 2000;
    const parentRows = Int32Array.from([0, 2, 5, 9, 13, 19]);
    const edgeParent = Int32Array.from({ length: 24 }, (_, e) => (e < 6 ? e : Math.floor(next() * 6)));
    const args = {
      hidden: normals(next, rows * dim),
      head: normals(next, vocab * dim, 0.3),
      vocab,
      dim,
      parentRows,
      edgeParent,
      edgeToken: ints(next, 24, 0, vocab - 1),
      edgeWeight: uniforms(next, 24, 0.1, 1),
      objective: { kind, beta: 0.7 },
      logitSoftcap,
    };
    const c = cpu.logprobsForward(args);
    const g = gpu.logprobsForward(args);
    expect(relError(g.edgeLogp, c.edgeLogp)).toBeLessThan(1e-2);
    expect(relError(g.edgeLoss, c.edgeLoss)).toBeLessThan(1e-2);
    const dhidden = normals(next, rows * dim, 0.01);
    const back = { ...args, dhidden, parentStats: c.parentStats, edgeStats: c.edgeStats };
    expect(relError(gpu.logprobsBackward(back), cpu.logprobsBackward(back))).toBeLessThan(1e-2);
  });

  it.each([
    [0, 0, 1, 0],
    [1, 0, 1, 0],
    [0.8, 30, 1, 0],
    [1, 0, 0.9, 0],
    [1, 0, 1, 2],
  ])('sampling at temperature %p, top-k %p, top-p %p, logit soft-cap %p draws what the CPU draws', (temperature, topK, topP, logitSoftcap) => {
    const args = {
      hidden: normals(next, 4 * 64),
      head: normals(next, 1500 * 64, 0.3),
      vocab: 1500,
      dim: 64,
      rows: Int32Array.from([0, 1, 2, 3, 3, 1]),
      streams: Uint32Array.from([5, 6, 7, 8, 9, 10]),
      temperature,
      topK,
      topP,
      seed: 11,
      step: 2,
      logitSoftcap,
    };
    const c = cpu.sample(args);
    const g = gpu.sample(args);
    expect(Array.from(g.tokens)).toEqual(Array.from(c.tokens));
    expect(relError(g.logp, c.logp)).toBeLessThan(1e-2);
  });

  it('AdamW and the sum of squares (f32 on both)', () => {
    const n = 3001;
    const param = normals(next, n);
    const grad = normals(next, n, 0.1);
    const m = normals(next, n, 0.01);
    const v = Float32Array.from(normals(next, n, 0.1), (x) => x * x);
    const hp = { lr: 1e-3, step: 2, gradScale: 0.5 };
    const c = cpu.adamwUpdate(param, grad, m, v, hp);
    const g = gpu.adamwUpdate(param, grad, m, v, hp);
    expect(relError(g.param, c.param)).toBeLessThan(1e-5);
    expect(relError(g.m, c.m)).toBeLessThan(1e-5);
    expect(relError(g.v, c.v)).toBeLessThan(1e-5);
    expect(Math.abs(gpu.sumSquares(grad) - cpu.sumSquares(grad)) / cpu.sumSquares(grad)).toBeLessThan(1e-9);
  });

  it('the sum of squares of many tensors in one pass (several launches, empty tensors)', () => {
    const xs = Array.from({ length: 300 }, (_, i) => normals(next, i % 7 === 0 ? 0 : 1 + ((i * 37) % 2000), 1 + (i % 5)));
    const c = cpu.sumSquares(xs);
    expect(Math.abs(gpu.sumSquares(xs) - c) / c).toBeLessThan(1e-9);
    expect(gpu.sumSquares([])).toBe(0);
  });
});
