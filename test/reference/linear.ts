/**
 * Float64 references for the GEMM and the LoRA linear layer, written the plain way (no
 * fusion, no blocking), plus the seeded random inputs and the error measure the kernel tests
 * use.
 */

export type GemmKind = 'nt' | 'nn' | 'tn';

/** A small deterministic generator (mulberry32) so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values uniform in [-scale, scale). */
export function randomArray(n: number, next: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; ++i) out[i] = (2 * next() - 1) * scale;
  return out;
}

/** ‖out − ref‖ / ‖ref‖; Infinity when out has a NaN or the lengths differ. */
export function relError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; ++i) {
    if (Number.isNaN(out[i])) return Infinity;
    const d = out[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den === 0 ? (num === 0 ? 0 : Infinity) : Math.sqrt(num / den);
}

/**
 * C[M x N] = C0 + op(A) op(B) (+ A2 op(B2)), with the layouts of cpu/gemm.h and tight leading
 * dimensions: nt A [M x K], B [N x K]; nn A [M x K], B [K x N]; tn A [K x M], B [K x N]. The
 * extension (nt, nn) has A2 [M x K2] and B2 [N x K2] (nt) or [K2 x N] (nn).
 */
export function refGemm(
  kind: GemmKind,
  M: number,
  N: number,
  K: number,
  A: ArrayLike<number>,
  B: ArrayLike<number>,
  C0?: ArrayLike<number> | null,
  extra?: { A2: ArrayLike<number>; B2: ArrayLike<number>; K2: number },
): Float64Array {
  const C = new Float64Array(M * N);
  for (let i = 0; i < M; ++i) {
    for (let j = 0; j < N; ++j) {
      let s = C0 ? C0[i * N + j] : 0;
      for (let k = 0; k < K; ++k) {
        const a = kind === 'tn' ? A[k * M + i] : A[i * K + k];
        const b = kind === 'nt' ? B[j * K + k] : B[k * N + j];
        s += a * b;
      }
      if (extra) {
        const K2 = extra.K2;
        for (let k = 0; k < K2; ++k) s += extra.A2[i * K2 + k] * (kind === 'nt' ? extra.B2[j * K2 + k] : extra.B2[k * N + j]);
      }
      C[i * N + j] = s;
    }
  }
  return C;
}

export interface LinearCase {
  rows: number;
  inFeatures: number;
  outFeatures: number;
  /** [out x in] */
  w: Float32Array;
  /** [out] */
  bias?: Float32Array;
  /** LoRA A [rank x in] and B [out x rank]; rank 0 means no adapter. */
  rank: number;
  A?: Float32Array;
  B?: Float32Array;
  scale: number;
}

/** Forward, unfused: u = x Aᵀ; y = x Wᵀ + bias + scale · u Bᵀ. */
export function refLinearForward(c: LinearCase, x: ArrayLike<number>): { y: Float64Array; u: Float64Array } {
  const { rows, inFeatures: nin, outFeatures: nout, rank: r } = c;
  const y = refGemm('nt', rows, nout, nin, x, c.w);
  if (c.bias) for (let i = 0; i < rows; ++i) for (let j = 0; j < nout; ++j) y[i * nout + j] += c.bias[j];
  if (r === 0) return { y, u: new Float64Array(0) };
  const u = refGemm('nt', rows, r, nin, x, c.A!);
  const uBt = refGemm('nt', rows, nout, r, u, c.B!);
  for (let i = 0; i < y.length; ++i) y[i] += c.scale * uBt[i];
  return { y, u };
}

/**
 * Backward, unfused, with g = dy B: dx = dx0 + dy W + scale · g A; dA = dA0 + scale · gᵀ x;
 * dB = dB0 + scale · dyᵀ u. Absent dx0 / dA0 / dB0 count as zeros.
 */
export function refLinearBackward(
  c: LinearCase,
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  u: ArrayLike<number>,
  init: { dx?: ArrayLike<number>; dA?: ArrayLike<number>; dB?: ArrayLike<number> } = {},
): { dx: Float64Array; dA: Float64Array; dB: Float64Array } {
  const { rows, inFeatures: nin, outFeatures: nout, rank: r, scale } = c;
  const dx = refGemm('nn', rows, nin, nout, dy, c.w, init.dx);
  if (r === 0) return { dx, dA: new Float64Array(0), dB: new Float64Array(0) };
  const g = refGemm('nn', rows, r, nout, dy, c.B!);
  const gA = refGemm('nn', rows, nin, r, g, c.A!);
  for (let i = 0; i < dx.length; ++i) dx[i] += scale * gA[i];
  const gtx = refGemm('tn', r, nin, rows, g, x);
  const dA = new Float64Array(r * nin);
  for (let i = 0; i < dA.length; ++i) dA[i] = (init.dA ? init.dA[i] : 0) + scale * gtx[i];
  const dytu = refGemm('tn', nout, r, rows, dy, u);
  const dB = new Float64Array(nout * r);
  for (let i = 0; i < dB.length; ++i) dB[i] = (init.dB ? init.dB[i] : 0) + scale * dytu[i];
  return { dx, dA, dB };
}
