/**
 * The LoRA linear layer on the CPU at SmolLM2's shapes, rank 4 and 16: fused (the rank-r term
 * as a K extension of the base GEMM, which is what cpu/lora_linear.cpp runs) against unfused
 * (the base GEMM plus separate rank-r GEMMs accumulated into y / dx), side by side in one run.
 *
 *   npx tsx bench/ops/lora-linear.bench.ts     (all threads; DIFFUSE_THREADS=n to pin)
 *
 * Both variants are composed from native().gemm calls so that they pay the same binding costs,
 * and kernel time is taken as in gemm.bench.ts (each call minus its K = 0 twin, from the
 * fastest calls and from medians), with one thread and with all:
 *   forward   fused:   u = x Aᵀ;  y = [x | u] [W | sB]ᵀ
 *             unfused: u = x Aᵀ;  y = x Wᵀ;  y += (s u) Bᵀ
 *   backward  fused:   sg = dy (sB);  dx = [dy | sg] [W ; A];  dA += sgᵀ x;  uᵀ dy (for dB)
 *             unfused: sg = dy (sB);  dx = dy W;  dx += sg A;   dA += sgᵀ x;  uᵀ dy
 * (the scaled copies sB, s u are made once, outside the timing, which favours neither side).
 * The real layer, native().ops('cpu').linearForward / linearBackward, is timed too: its wall
 * time includes copying every input into backend buffers and the outputs back, so only its
 * difference from the same call without an adapter is comparable.
 * Prints tables and writes the "loraLinear" section of bench/results/cpu-linear.json.
 */
import { native } from '../../lib/native.js';
import { filled, machine, measure, printTable, threadCounts, type Timing, withThreads, writeSection } from './linear-bench-common.js';

const layers = [
  { name: 'q/o', inFeatures: 576, outFeatures: 576 },
  { name: 'k/v', inFeatures: 576, outFeatures: 192 },
  { name: 'gate/up', inFeatures: 576, outFeatures: 1536 },
  { name: 'down', inFeatures: 1536, outFeatures: 576 },
];
const rowsList = [256, 1024];
const ranks = [4, 16];

type Kind = 'nt' | 'nn' | 'tn';

/** Registers timed gemm calls (deduplicated by name) and their K = 0 twins. */
class Calls {
  readonly tasks = new Map<string, () => void>();
  private twinOf = new Map<string, string>();

  gemm(
    name: string,
    kind: Kind,
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    B: Float32Array,
    C?: Float32Array | null,
    extra?: { A2: Float32Array; B2: Float32Array; K2: number },
  ): string {
    const g = native();
    if (!this.tasks.has(name)) {
      this.tasks.set(name, () => g.gemm(kind, M, N, K, A, B, C, extra));
      const twin = `twin ${kind} ${M}x${N}${C ? ' acc' : ''}`;
      if (!this.tasks.has(twin)) this.tasks.set(twin, () => g.gemm(kind, M, N, 0, A, B, C));
      this.twinOf.set(name, twin);
    }
    return name;
  }

  raw(name: string, fn: () => void): string {
    if (!this.tasks.has(name)) this.tasks.set(name, fn);
    return name;
  }

  /** Kernel milliseconds of a gemm call: its time minus its twin's (medians, or fastest calls). */
  kernelMs(ms: Map<string, Timing>, name: string, which: keyof Timing): number {
    return ms.get(name)![which] - ms.get(this.twinOf.get(name)!)![which];
  }
}

interface Config {
  layer: string;
  rows: number;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  forward: { base: string[]; fused: string[]; unfused: string[] };
  backward: { base: string[]; fused: string[]; unfused: string[] };
  ops: { forward: string; forwardBase: string; backward: string; backwardBase: string };
}

function register(calls: Calls, layer: (typeof layers)[number], rows: number, r: number): Config {
  const { inFeatures: nin, outFeatures: nout } = layer;
  const s = 8 / r;
  const tag = `${layer.name} rows=${rows}`;
  const seed = nin + 3 * nout + 7 * rows;
  const x = filled(rows * nin, seed);
  const dy = filled(rows * nout, seed + 1);
  const W = filled(nout * nin, seed + 2);
  const A = filled(r * nin, seed + 3);
  const B = filled(nout * r, seed + 4);
  const sB = B.map((v) => s * v);
  const sBt = new Float32Array(r * nout);
  for (let j = 0; j < nout; ++j) for (let c = 0; c < r; ++c) sBt[c * nout + j] = sB[j * r + c];
  const u = native().gemm('nt', rows, r, nin, x, A);
  const su = u.map((v) => s * v);
  const sg = native().gemm('nn', rows, r, nout, dy, sB);
  const y = native().gemm('nt', rows, nout, nin, x, W);
  const dx = native().gemm('nn', rows, nin, nout, dy, W);
  const dA = filled(r * nin, seed + 5);

  const baseF = calls.gemm(`${tag} y = x Wt`, 'nt', rows, nout, nin, x, W);
  const baseB = calls.gemm(`${tag} dx = dy W`, 'nn', rows, nin, nout, dy, W);
  const rt = `${tag} r=${r}`;
  const uCall = calls.gemm(`${rt} u = x At`, 'nt', rows, r, nin, x, A);
  const forward = {
    base: [baseF],
    fused: [uCall, calls.gemm(`${rt} y = [x|u][W|sB]t`, 'nt', rows, nout, nin, x, W, null, { A2: u, B2: sB, K2: r })],
    unfused: [uCall, baseF, calls.gemm(`${rt} y += su Bt`, 'nt', rows, nout, r, su, B, y)],
  };
  const dACall = calls.gemm(`${rt} dA += sgt x`, 'tn', r, nin, rows, sg, x, dA);
  const utdy = calls.gemm(`${rt} ut dy`, 'tn', r, nout, rows, u, dy);
  const backward = {
    base: [baseB],
    fused: [
      calls.gemm(`${rt} sg = dy sBtt`, 'nt', rows, r, nout, dy, sBt),
      calls.gemm(`${rt} dx = [dy|sg][W;A]`, 'nn', rows, nin, nout, dy, W, null, { A2: sg, B2: A, K2: r }),
      dACall,
      utdy,
    ],
    unfused: [calls.gemm(`${rt} sg = dy sB`, 'nn', rows, r, nout, dy, sB), baseB, calls.gemm(`${rt} dx += sg A`, 'nn', rows, nin, r, sg, A, dx), dACall, utdy],
  };

  const ops = native().ops('cpu');
  const args = { x, w: W, rows, inFeatures: nin, outFeatures: nout };
  const layerCalls = {
    forward: calls.raw(`${rt} ops.linearForward`, () => ops.linearForward({ ...args, A, B, rank: r, scale: s })),
    forwardBase: calls.raw(`${tag} ops.linearForward no adapter`, () => ops.linearForward(args)),
    backward: calls.raw(`${rt} ops.linearBackward`, () => ops.linearBackward({ ...args, dy, A, B, u, rank: r, scale: s })),
    backwardBase: calls.raw(`${tag} ops.linearBackward no adapter`, () => ops.linearBackward({ ...args, dy })),
  };
  return { layer: layer.name, rows, rank: r, inFeatures: nin, outFeatures: nout, forward, backward, ops: layerCalls };
}

async function pass(calls: Calls, configs: Config[], threads: number) {
  const ms = await withThreads(threads, () => measure(calls.tasks, { rounds: 3, timeMs: 250 }));
  const variants = (c: Config['forward'], which: keyof Timing) => {
    const sum = (names: string[]) => names.reduce((t, n) => t + calls.kernelMs(ms, n, which), 0);
    return { base: sum(c.base), fused: sum(c.fused), unfused: sum(c.unfused) };
  };
  const results = configs.map((c) => ({
    layer: c.layer,
    rows: c.rows,
    rank: c.rank,
    inFeatures: c.inFeatures,
    outFeatures: c.outFeatures,
    forwardMs: variants(c.forward, 'median'),
    backwardMs: variants(c.backward, 'median'),
    bestForwardMs: variants(c.forward, 'best'),
    bestBackwardMs: variants(c.backward, 'best'),
    opsMs: {
      forward: ms.get(c.ops.forward)!.median,
      forwardNoAdapter: ms.get(c.ops.forwardBase)!.median,
      backward: ms.get(c.ops.backward)!.median,
      backwardNoAdapter: ms.get(c.ops.backwardBase)!.median,
    },
  }));

  const pct = (extra: number, base: number) => `${((100 * extra) / base).toFixed(0)}%`;
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
  console.log(
    `\n${threads} thread${threads > 1 ? 's' : ''}: kernel ms from the fastest calls; speedup = unfused / fused; ` +
      '"+LoRA" = cost over the base GEMM alone; last two columns from medians',
  );
  printTable(
    results.map((r) => ({
      layer: `${r.layer} ${r.inFeatures}->${r.outFeatures}`,
      rows: r.rows,
      r: r.rank,
      'fwd base': r.bestForwardMs.base,
      'fwd fused': r.bestForwardMs.fused,
      'fwd unfused': r.bestForwardMs.unfused,
      speedup: ratio(r.bestForwardMs.unfused, r.bestForwardMs.fused),
      '+LoRA fused': pct(r.bestForwardMs.fused - r.bestForwardMs.base, r.bestForwardMs.base),
      '+LoRA unfused': pct(r.bestForwardMs.unfused - r.bestForwardMs.base, r.bestForwardMs.base),
      'bwd base': r.bestBackwardMs.base,
      'bwd fused': r.bestBackwardMs.fused,
      'bwd unfused': r.bestBackwardMs.unfused,
      'bwd speedup': ratio(r.bestBackwardMs.unfused, r.bestBackwardMs.fused),
      '+LoRA bwd fused': pct(r.bestBackwardMs.fused - r.bestBackwardMs.base, r.bestBackwardMs.base),
      'median fwd speedup': ratio(r.forwardMs.unfused, r.forwardMs.fused),
      'median bwd speedup': ratio(r.backwardMs.unfused, r.backwardMs.fused),
    })),
  );
  console.log('the real layer through ops (ms, including host <-> backend copies of every input and output)');
  printTable(
    results.map((r) => ({
      layer: `${r.layer} ${r.inFeatures}->${r.outFeatures}`,
      rows: r.rows,
      r: r.rank,
      'fwd no adapter': r.opsMs.forwardNoAdapter,
      'fwd LoRA': r.opsMs.forward,
      'bwd no adapter': r.opsMs.backwardNoAdapter,
      'bwd LoRA': r.opsMs.backward,
    })),
  );
  return { threads, results };
}

async function main(): Promise<void> {
  const m = machine();
  console.log(`LoRA linear on ${m.cpu}, ${m.threads} threads, ${m.isa} kernels, commit ${m.commit}`);
  const calls = new Calls();
  const configs: Config[] = [];
  for (const layer of layers) for (const rows of rowsList) for (const r of ranks) configs.push(register(calls, layer, rows, r));
  const results = [];
  for (const threads of threadCounts()) results.push(await pass(calls, configs, threads));
  writeSection('loraLinear', {
    machine: m,
    method:
      'tinybench, 3 rounds in alternating order, wall clock. best*: sums of kernel ms (native().gemm call minus the same call with ' +
      'K = 0) of the calls each variant makes, from the fastest calls (the headline: other sessions keep this machine busy); ' +
      'forwardMs / backwardMs: the same from medians (median of the rounds). opsMs: median ms of native().ops(cpu).linearForward / ' +
      'linearBackward including host copies.',
    scale: '8 / rank',
    passes: results,
  });
}

await main();
