/**
 * What each storage type costs inside the GEMM: y = x Wᵀ (nt) and dx = dy W (nn) at a 7B layer's
 * shape (W 4096 x 4096) for 64 and 256 rows, with W stored as f32 and as every type the CPU keeps
 * (bf16, f16, GGUF blocks), which the GEMM widens to f32 as it packs each sliver of W, on every
 * call (io/widen_lanes.inc). Same values in every case (W rounded to each type), same threads.
 *
 *   npx tsx bench/ops/widen.bench.ts          (DIFFUSE_THREADS=n to pin; DIFFUSE_CPU_ISA=avx2)
 *
 * "x f32" is the stored product's time over the f32 one's: 1.00 means widening is free. Writes
 * bench/results/cpu-widen-<isa>.json.
 */
import { writeFileSync } from 'node:fs';

import { native, type WeightDtype } from '../../lib/native.js';
import { machineLine, medianMs, normals, printTable } from './kernel-bench-common.js';

const types: WeightDtype[] = ['BF16', 'F16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'];
const N = 4096, K = 4096;

async function main(): Promise<void> {
  const addon = native();
  console.log(`GEMM with a stored W on ${machineLine()}`);
  const w = normals(N * K, 0.02, 5);
  const stored = new Map(types.map((type) => [type, addon.quantize(type, w)]));
  const rows: Record<string, string | number>[] = [];
  for (const M of [64, 256]) {
    const x = normals(M * K, 1, M);
    for (const kind of ['nt', 'nn'] as const) {
      const tasks = new Map<string, () => unknown>([['F32', () => addon.gemm(kind, M, N, K, x, w)]]);
      for (const [type, bytes] of stored) tasks.set(type, () => addon.gemm(kind, M, N, K, x, { dtype: type, bytes }));
      const ms = await medianMs(tasks, 3, 400, 5);
      const base = ms.get('F32')!;
      for (const [type, t] of ms) rows.push({ kind, M, 'W type': type, ms: t, 'GFLOP/s': (2 * M * N * K) / t / 1e6, 'x f32': t / base });
    }
  }
  printTable(rows);
  const out = `bench/results/cpu-widen-${addon.gemmIsa()}.json`;
  writeFileSync(out, `${JSON.stringify({ machine: machineLine(), date: new Date().toISOString(), shape: { N, K }, rows }, null, 2)}\n`);
  console.log(`wrote ${out}`);
}

await main();
