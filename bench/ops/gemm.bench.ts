/**
 * CPU sgemm throughput at the linear-layer shapes of a step (SmolLM2-135M and Llama-2-7B, 64 to
 * 900 rows), against the ceiling measured in the same run on the same shapes and threads by an
 * external BLAS: MKL through torch and OpenBLAS through numpy, from the reference environment
 * (bench/blas-ceiling.ts). Forward layers are nt (y = x Wᵀ, W [N x K]); their input gradients
 * are nn (dx = dy W, W [K x N]).
 *
 *   npx tsx bench/ops/gemm.bench.ts            (all threads; DIFFUSE_THREADS=n to pin)
 *
 * Two passes, one thread then all threads. Kernel time is the call's time minus that of the
 * same call at K = 0, from the fastest calls ("best", the headline on this shared machine) and
 * from the medians (see linear-bench-common.ts). "of ceiling" is our best over the better
 * library's best on that shape. Prints a table per pass and writes the "gemm-<isa>" section of
 * bench/results/cpu-linear.json, or of DIFFUSE_LINEAR_RESULTS (DIFFUSE_CPU_ISA=avx2 measures the
 * AVX2 kernels on an AVX-512 machine).
 */
import { native } from '../../lib/native.js';
import { bestOf, measureCeiling } from '../blas-ceiling.js';
import { filled, machine, measure, printTable, threadCounts, type Timing, withThreads, writeSection } from './linear-bench-common.js';

type Kind = 'nt' | 'nn';

// (N, K) per model, with the rows each is measured at.
const models: { model: string; rows: number[]; layers: { name: string; N: number; K: number }[] }[] = [
  {
    model: 'SmolLM2-135M',
    rows: [64, 256, 900],
    // q/o, k/v (GQA 3 heads of 64), gate/up, down, a 4096-row chunk of the tied LM head.
    layers: [
      { name: 'q/o', N: 576, K: 576 },
      { name: 'k/v', N: 192, K: 576 },
      { name: 'gate/up', N: 1536, K: 576 },
      { name: 'down', N: 576, K: 1536 },
      { name: 'lm-head chunk', N: 4096, K: 576 },
    ],
  },
  {
    model: 'Llama-2-7B',
    rows: [64, 256],
    layers: [
      { name: 'q/k/v/o', N: 4096, K: 4096 },
      { name: 'gate/up', N: 11008, K: 4096 },
      { name: 'down', N: 4096, K: 11008 },
    ],
  },
];
const layerName = (N: number, K: number) => {
  for (const m of models) for (const l of m.layers) if (l.N === N && l.K === K) return `${m.model} ${l.name}`;
  return `${N}x${K}`;
};

interface Shape {
  kind: Kind;
  M: number;
  N: number;
  K: number;
}

const key = (s: Shape) => `${s.kind} ${s.M}x${s.N}x${s.K}`;

/** Timed calls: each shape and its K = 0 twin. */
function addShape(tasks: Map<string, () => void>, s: Shape): void {
  const A = filled(s.M * s.K, s.M + s.K);
  const B = filled(s.N * s.K, s.N + 7 * s.K);
  const g = native();
  tasks.set(key(s), () => g.gemm(s.kind, s.M, s.N, s.K, A, B));
  tasks.set(key({ ...s, K: 0 }), () => g.gemm(s.kind, s.M, s.N, 0, A, B));
}

interface Measured extends Shape {
  rawMs: number;
  overheadMs: number;
  kernelMs: number;
  gflops: number;
  /** From the fastest calls instead of the medians. */
  bestKernelMs: number;
  bestGflops: number;
}

function measured(s: Shape, ms: Map<string, Timing>): Measured {
  const raw = ms.get(key(s))!;
  const overhead = ms.get(key({ ...s, K: 0 }))!;
  const flops = 2 * s.M * s.N * s.K;
  const kernelMs = raw.median - overhead.median;
  const bestKernelMs = raw.best - overhead.best;
  return {
    ...s,
    rawMs: raw.median,
    overheadMs: overhead.median,
    kernelMs,
    gflops: flops / kernelMs / 1e6,
    bestKernelMs,
    bestGflops: flops / bestKernelMs / 1e6,
  };
}

async function pass(threads: number) {
  return withThreads(threads, async () => {
    const shapes: Shape[] = [];
    for (const kind of ['nt', 'nn'] as const)
      for (const m of models) for (const M of m.rows) for (const l of m.layers) shapes.push({ kind, M, N: l.N, K: l.K });
    const tasks = new Map<string, () => void>();
    for (const s of shapes) addShape(tasks, s);
    const ms = await measure(tasks);
    const results = shapes.map((s) => measured(s, ms));
    const ceiling = measureCeiling(shapes, threads);
    const rows = results.map((r, i) => {
      const c = ceiling.shapes[i];
      return { ...r, ceilingGflops: bestOf(c, threads), mklGflops: c.torch.bestGflops, openblasGflops: c.numpy.bestGflops, ofCeiling: r.bestGflops / bestOf(c, threads) };
    });
    const fractions = rows.map((r) => r.ofCeiling);
    const geomean = Math.exp(fractions.reduce((a, f) => a + Math.log(f), 0) / fractions.length);
    console.log(`\n${threads} thread${threads > 1 ? 's' : ''}. Ceiling: the better of ${ceiling.torch} and ${ceiling.numpy} on each shape, same threads (or ${threads} × their 1-thread best), same run.`);
    printTable(
      rows.map((r) => ({
        kind: r.kind,
        layer: layerName(r.N, r.K),
        'M x N x K': `${r.M}x${r.N}x${r.K}`,
        'best kernel ms': r.bestKernelMs,
        'best GFLOP/s': r.bestGflops,
        'MKL GFLOP/s': r.mklGflops,
        'OpenBLAS GFLOP/s': r.openblasGflops,
        'ceiling GFLOP/s': r.ceilingGflops,
        'of ceiling': `${(100 * r.ofCeiling).toFixed(0)}%`,
        'median GFLOP/s': r.gflops,
      })),
    );
    console.log(`of ceiling: geometric mean ${(100 * geomean).toFixed(0)}%, lowest ${(100 * Math.min(...fractions)).toFixed(0)}%`);
    return { threads, ceiling: { torch: ceiling.torch, numpy: ceiling.numpy }, ofCeilingGeomean: geomean, ofCeilingLowest: Math.min(...fractions), shapes: rows };
  });
}

async function main(): Promise<void> {
  const m = machine();
  console.log(`sgemm on ${m.cpu}, ${m.threads} threads, ${m.isa} kernels, commit ${m.commit}`);
  const results = [];
  for (const threads of threadCounts()) results.push(await pass(threads));
  writeSection(`gemm-${m.isa}`, {
    machine: m,
    method:
      'tinybench, 3 rounds in alternating order, of native().gemm, wall clock. Kernel ms = call ms minus the same call with K = 0 ' +
      '(allocating and first touching C), from the fastest calls ("best*", the headline: other sessions keep this machine busy) and ' +
      'from medians (median of the rounds). Ceiling = the better of torch.matmul (MKL) and numpy.matmul (OpenBLAS) on the same shape ' +
      'and threads, fastest call, measured right after ours in the same run (bench/blas_ceiling.py).',
    passes: results,
  });
}

await main();
