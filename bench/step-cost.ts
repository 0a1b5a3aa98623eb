/**
 * What a training step costs and what it could cost: its FLOPs, and the ceiling for them from
 * an external BLAS (bench/blas-ceiling.ts) timed on the step's own GEMM shapes and threads.
 */
import type { EngineConfig } from '../lib/native.js';
import type { TrieBatch } from '../lib/targets/target-set.js';
import { bestOf, measureCeiling, type Ceiling, type CeilingShape } from './blas-ceiling.js';

/** Multiply-adds ×2 of one step: linear layers forward and input-gradient, attention, the LM head. */
export function stepFlops(c: EngineConfig, batch: TrieBatch, rank: number): number {
  const T = batch.positions;
  const d = c.hiddenSize, I = c.intermediateSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const linear = d * q + 2 * d * kv + q * d + 3 * d * I;
  const lora = rank * ((d + q) + 2 * (d + kv) + (q + d) + 2 * (d + I) + (I + d));
  // Forward, then the input gradient (dx = dy W) and the rank-r gradients in the backward.
  const perRow = c.numLayers * (2 * linear * 2 + 2 * lora * 4);
  // Attention: scores and the weighted sum forward, about twice that backward.
  const depth = new Int32Array(T);
  let keys = 0;
  for (let r = 0; r < T; r++) {
    const p = batch.batch.parents[r];
    depth[r] = p < 0 ? 0 : depth[p] + 1;
    keys += depth[r] + 1;
  }
  const attention = c.numLayers * keys * c.numHeads * c.headDim * 2 * 2 * 3;
  // The head: the logits pass, then the backward's recomputation and dz·W.
  const parents = new Set(batch.batch.edgeRows).size;
  const head = parents * 2 * c.vocabSize * d * 3;
  return T * perRow + attention + head;
}

/** The step's base GEMMs (one layer's, forward nt and input-gradient nn) with their counts per step. */
function stepShapes(c: EngineConfig, T: number): { shape: CeilingShape; count: number }[] {
  const d = c.hiddenSize, I = c.intermediateSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const layer: [number, number, number][] = [
    [q, d, 1],
    [kv, d, 2],
    [d, q, 1],
    [I, d, 2],
    [d, I, 1],
  ];
  const out: { shape: CeilingShape; count: number }[] = [];
  for (const [N, K, n] of layer) {
    out.push({ shape: { kind: 'nt', M: T, N, K }, count: n * c.numLayers });
    out.push({ shape: { kind: 'nn', M: T, N: K, K: N }, count: n * c.numLayers });
  }
  return out;
}

export interface StepCeiling {
  /** GFLOP/s the external BLAS reaches over the step's linear GEMMs, FLOP-weighted (total flops over total time). */
  gflops: number;
  libraries: { torch: string; numpy: string };
  shapes: (CeilingShape & { count: number; gflops: number })[];
}

/** The ceiling for a step over T rows of a model of config c, on `threads` threads. */
export function stepCeiling(c: EngineConfig, T: number, threads: number, seconds = 0.5): StepCeiling {
  const shapes = stepShapes(c, T);
  const ceiling: Ceiling = measureCeiling(
    shapes.map((s) => s.shape),
    threads,
    seconds,
  );
  let flops = 0, time = 0;
  const rows = shapes.map((s, i) => {
    const g = bestOf(ceiling.shapes[i], threads);
    const f = 2 * s.shape.M * s.shape.N * s.shape.K * s.count;
    flops += f;
    time += f / (g * 1e9);
    return { ...s.shape, count: s.count, gflops: g };
  });
  return { gflops: flops / time / 1e9, libraries: { torch: ceiling.torch, numpy: ceiling.numpy }, shapes: rows };
}
