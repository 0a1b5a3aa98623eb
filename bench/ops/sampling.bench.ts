/**
 * Sampling next tokens through SmolLM2's LM head (vocab 49152, dim 576) for 1, 8 and 64 rows:
 * plain temperature sampling, top-p 0.9 and top-k 50 (temperature 0.8), against the logits'
 * GEMM alone, native().gemm('nt', n, 49152, 576).
 *
 *   npx tsx bench/ops/sampling.bench.ts         (all threads; DIFFUSE_THREADS=n to pin)
 *
 * Kernel times subtract transfer twins (kernel-bench-common.ts): for the GEMM the same call at
 * K = 0; for sampling an ops call that uploads the same 113 MB head and does no work.
 */
import { native } from '../../lib/native.js';
import { machineLine, medianMs, normals, printTable } from './kernel-bench-common.js';

const vocab = 49152;
const dim = 576;

async function main(): Promise<void> {
  console.log(`sampling on ${machineLine()}`);
  const addon = native();
  const ops = addon.ops('cpu');
  // Logits with a spread like a small model's (std ~ 3), so top-p keeps hundreds of tokens.
  const head = normals(vocab * dim, 3 / Math.sqrt(dim), 11);
  const filters = [
    { name: 'temperature 1', temperature: 1, topK: 0, topP: 1 },
    { name: 'top-p 0.9', temperature: 0.8, topK: 0, topP: 0.9 },
    { name: 'top-k 50', temperature: 0.8, topK: 50, topP: 1 },
  ];
  const rows: Record<string, string | number>[] = [];
  for (const n of [1, 8, 64]) {
    const hidden = normals(n * dim, 1, n);
    const rowIds = Int32Array.from({ length: n }, (_, i) => i);
    const streams = Uint32Array.from({ length: n }, (_, i) => i);
    const tasks = new Map<string, () => unknown>([
      ['gemm', () => addon.gemm('nt', n, vocab, dim, hidden, head)],
      ['gemm twin', () => addon.gemm('nt', n, vocab, 0, hidden, head)],
      ['transfer twin', () => ops.embeddingForward(new Int32Array(1), head, dim)],
    ]);
    for (const f of filters)
      tasks.set(f.name, () => ops.sample({ hidden, head, vocab, dim, rows: rowIds, streams, temperature: f.temperature, topK: f.topK, topP: f.topP, seed: 1, step: 0 }));
    const ms = await medianMs(tasks, 3, 1000, 8);
    const gemm = ms.get('gemm')! - ms.get('gemm twin')!;
    rows.push({ rows: n, op: 'gemm nt', 'raw ms': ms.get('gemm')!, 'twin ms': ms.get('gemm twin')!, 'kernel ms': gemm, 'x gemm': 1 });
    for (const f of filters) {
      const kernel = ms.get(f.name)! - ms.get('transfer twin')!;
      rows.push({ rows: n, op: f.name, 'raw ms': ms.get(f.name)!, 'twin ms': ms.get('transfer twin')!, 'kernel ms': kernel, 'x gemm': kernel / gemm });
    }
  }
  printTable(rows);
}

await main();
