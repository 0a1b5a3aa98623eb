/**
 * CPU sgemm throughput at SmolLM2's linear-layer shapes, against this machine's practical peak
 * (the best large square GEMM), side by side in one run. Forward layers are nt (y = x Wᵀ, W
 * [N x K]); their input gradients are nn (dx = dy W, W [K x N]).
 *
 *   npx tsx bench/ops/gemm.bench.ts            (all threads; DIFFUSE_THREADS=n to pin)
 *
 * Two passes, one thread then all threads. Kernel time is the call's time minus that of the
 * same call at K = 0, from the fastest calls ("best", the headline on this shared machine) and
 * from the medians (see linear-bench-common.ts). Prints a table per pass and writes the "gemm"
 * section of bench/results/cpu-linear.json.
 */
import { native } from '../../lib/native.js';
import { filled, machine, measure, printTable, threadCounts, type Timing, withThreads, writeSection } from './linear-bench-common.js';

type Kind = 'nt' | 'nn';

const rowsList = [64, 256, 1024];
// (N, K): q/o, k/v (GQA 3 heads of 64), gate/up, down, a 4096-row chunk of the tied LM head.
const layers: { name: string; N: number; K: number }[] = [
  { name: 'q/o', N: 576, K: 576 },
  { name: 'k/v', N: 192, K: 576 },
  { name: 'gate/up', N: 1536, K: 576 },
  { name: 'down', N: 576, K: 1536 },
  { name: 'lm-head chunk', N: 4096, K: 576 },
];
// Large squares for the practical peak: operands well beyond L2, yet short enough (a few ms)
// that some calls run undisturbed on a shared machine; sampled longer than the shapes.
const squares = [768, 1024, 1536];

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
    const peakTasks = new Map<string, () => void>();
    const squareShapes = squares.map((n): Shape => ({ kind: 'nt', M: n, N: n, K: n }));
    for (const s of squareShapes) addShape(peakTasks, s);
    const peakMs = await measure(peakTasks, { timeMs: 1000 });
    const squareResults = squareShapes.map((s) => measured(s, peakMs));
    const peak = Math.max(...squareResults.map((r) => r.gflops));
    const bestPeak = Math.max(...squareResults.map((r) => r.bestGflops));

    const shapes: Shape[] = [];
    for (const kind of ['nt', 'nn'] as const) for (const M of rowsList) for (const l of layers) shapes.push({ kind, M, N: l.N, K: l.K });
    const tasks = new Map<string, () => void>();
    for (const s of shapes) addShape(tasks, s);
    const ms = await measure(tasks);
    const results = shapes.map((s) => measured(s, ms));

    console.log(
      `\n${threads} thread${threads > 1 ? 's' : ''}. Practical peak (best of square nt ${squares.join(', ')}): ` +
        `${bestPeak.toFixed(1)} GFLOP/s from the fastest calls, ${peak.toFixed(1)} from medians`,
    );
    printTable(
      results.map((r) => ({
        kind: r.kind,
        layer: layers.find((l) => l.N === r.N && l.K === r.K)!.name,
        'M x N x K': `${r.M}x${r.N}x${r.K}`,
        'best kernel ms': r.bestKernelMs,
        'best GFLOP/s': r.bestGflops,
        'of peak': `${((100 * r.bestGflops) / bestPeak).toFixed(0)}%`,
        'median call ms': r.rawMs,
        'median alloc ms': r.overheadMs,
        'median GFLOP/s': r.gflops,
      })),
    );
    return {
      threads,
      peak: { gflops: peak, bestGflops: bestPeak, squares: squareResults },
      shapes: results.map((r) => ({
        ...r,
        fractionOfPeak: r.gflops / peak,
        bestFractionOfBestPeak: r.bestGflops / bestPeak,
      })),
    };
  });
}

async function main(): Promise<void> {
  const m = machine();
  console.log(`sgemm on ${m.cpu}, ${m.threads} threads, ${m.isa} kernels, commit ${m.commit}`);
  const results = [];
  for (const threads of threadCounts()) results.push(await pass(threads));
  writeSection('gemm', {
    machine: m,
    method:
      'tinybench, 3 rounds in alternating order, of native().gemm, wall clock. Kernel ms = call ms minus the same call with K = 0 ' +
      '(allocating and first touching C), from the fastest calls ("best*", the headline: other sessions keep this machine busy) and ' +
      'from medians (median of the rounds). Peak = the best large square nt GEMM at the same thread count.',
    passes: results,
  });
}

await main();
