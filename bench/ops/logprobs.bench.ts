/**
 * Fused edge log-probabilities through SmolLM2's LM head (vocab 49152, dim 576) against the
 * LM-head GEMM alone, native().gemm('nt', M, 49152, 576), for M = 16 and 256 parent rows with
 * three child edges each. The design target: the fused forward within 1.3x the GEMM. The
 * backward recomputes the logits and multiplies dz back through the head: two GEMMs' worth.
 *
 *   npx tsx bench/ops/logprobs.bench.ts         (all threads; DIFFUSE_THREADS=n to pin)
 *
 * Kernel times subtract transfer twins (kernel-bench-common.ts): for the GEMM the same call at
 * K = 0; for the log-probs an ops call that uploads the same 113 MB head and does no work.
 */
import { LogprobArgs, native, NativeObjective } from '../../lib/native.js';
import { machineLine, medianMs, normals, printTable } from './kernel-bench-common.js';

const vocab = 49152;
const dim = 576;

async function main(): Promise<void> {
  console.log(`log-probs on ${machineLine()}`);
  const addon = native();
  const ops = addon.ops('cpu');
  const head = normals(vocab * dim, 0.05, 7);
  const objectives: NativeObjective[] = [{ kind: 'ce' }, { kind: 'gem-linear' }, { kind: 'gem-logsigmoid' }];
  const rows: Record<string, string | number>[] = [];
  for (const M of [16, 256]) {
    const hidden = normals(M * dim, 1, M);
    const parentRows = Int32Array.from({ length: M }, (_, i) => i);
    const edgeParent = Int32Array.from({ length: 3 * M }, (_, e) => Math.floor(e / 3));
    const edgeToken = Int32Array.from({ length: 3 * M }, (_, e) => (e * 7919) % vocab);
    const edgeWeight = new Float32Array(3 * M).fill(0.3);
    const base: LogprobArgs = { hidden, head, vocab, dim, parentRows, edgeParent, edgeToken, edgeWeight };
    const tasks = new Map<string, () => unknown>([
      ['gemm', () => addon.gemm('nt', M, vocab, dim, hidden, head)],
      ['gemm twin', () => addon.gemm('nt', M, vocab, 0, hidden, head)],
      ['transfer twin', () => ops.embeddingForward(new Int32Array(1), head, dim)],
    ]);
    for (const objective of objectives) {
      const args = { ...base, objective };
      const { parentStats, edgeStats } = ops.logprobsForward(args);
      const dhidden = new Float32Array(M * dim);
      tasks.set(`fwd ${objective.kind}`, () => ops.logprobsForward(args));
      tasks.set(`bwd ${objective.kind}`, () => ops.logprobsBackward({ ...args, parentStats, edgeStats, dhidden }));
    }
    // Small M: the kernels are a small part of each call, so take many samples.
    const ms = M < 64 ? await medianMs(tasks, 3, 1000, 12) : await medianMs(tasks, 3, 500, 4);
    const gemm = ms.get('gemm')! - ms.get('gemm twin')!;
    rows.push({ M, op: 'gemm nt', 'raw ms': ms.get('gemm')!, 'twin ms': ms.get('gemm twin')!, 'kernel ms': gemm, 'x gemm': 1 });
    for (const objective of objectives)
      for (const dir of ['fwd', 'bwd']) {
        const raw = ms.get(`${dir} ${objective.kind}`)!;
        const kernel = raw - ms.get('transfer twin')!;
        rows.push({ M, op: `${dir} ${objective.kind}`, 'raw ms': raw, 'twin ms': ms.get('transfer twin')!, 'kernel ms': kernel, 'x gemm': kernel / gemm });
      }
  }
  printTable(rows);
}

await main();
