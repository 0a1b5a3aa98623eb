/**
 * Tree-masked attention, forward and backward, at SmolLM2's shapes (9 q heads, 3 kv heads,
 * head_dim 64), with key lists built as the model builds them (root first):
 *   - a 40-token prompt with a 60-node trie (a typical target set),
 *   - a 40-token prompt with a 960-node trie (~1000 rows),
 *   - a 1000-token causal prompt.
 *
 *   npx tsx bench/ops/attention.bench.ts        (all threads; DIFFUSE_THREADS=n to pin,
 *                                                DIFFUSE_CPU_ISA=avx2|generic to cap the kernels)
 *
 * Kernel time is the call's median minus the median of the same call with empty key lists
 * (same transfers, no attention; see kernel-bench-common.ts). GFLOP/s counts 4 head_dim
 * flops per (key, q head) forward and 10 backward.
 */
import { native } from '../../lib/native.js';
import { machineLine, medianMs, normals, printTable } from './kernel-bench-common.js';

const qHeads = 9;
const kvHeads = 3;
const headDim = 64;

/** Root-first key lists of a prompt chain with a random trie hanging off its last row. */
function keyLists(prompt: number, nodes: number): { keyOffsets: Int32Array; keyRows: Int32Array } {
  const lists: number[][] = [];
  for (let i = 0; i < prompt; ++i) lists.push(Array.from({ length: i + 1 }, (_, j) => j));
  const paths: number[][] = [];
  let seed = 12345;
  const next = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0);
  for (let n = 0; n < nodes; ++n) {
    const parent = n === 0 || next() % 4 === 0 ? -1 : next() % n;
    const path = [...(parent < 0 ? [] : paths[parent]), prompt + n];
    paths.push(path);
    lists.push([...lists[prompt - 1], ...path]);
  }
  const keyOffsets = new Int32Array(lists.length + 1);
  lists.forEach((l, i) => (keyOffsets[i + 1] = keyOffsets[i] + l.length));
  return { keyOffsets, keyRows: Int32Array.from(lists.flat()) };
}

async function main(): Promise<void> {
  console.log(`attention on ${machineLine()}`);
  const ops = native().ops('cpu');
  const cases = [
    { name: 'prompt 40 + trie 60', prompt: 40, nodes: 60 },
    { name: 'prompt 40 + trie 960', prompt: 40, nodes: 960 },
    { name: 'causal prompt 1000', prompt: 1000, nodes: 0 },
  ];
  const rows: Record<string, string | number>[] = [];
  for (const c of cases) {
    const { keyOffsets, keyRows } = keyLists(c.prompt, c.nodes);
    const T = c.prompt + c.nodes;
    const shape = { qRows: T, kvRows: T, qHeads, kvHeads, headDim };
    const q = normals(T * qHeads * headDim, 1, 1);
    const k = normals(T * kvHeads * headDim, 1, 2);
    const v = normals(T * kvHeads * headDim, 1, 3);
    const dout = normals(T * qHeads * headDim, 1, 4);
    const { out, lse } = ops.attentionForward(q, k, v, keyOffsets, keyRows, shape);
    const none = new Int32Array(T + 1);
    const tasks = new Map<string, () => unknown>([
      ['fwd', () => ops.attentionForward(q, k, v, keyOffsets, keyRows, shape)],
      ['fwd twin', () => ops.attentionForward(q, k, v, none, keyRows, shape)],
      ['bwd', () => ops.attentionBackward(dout, q, k, v, out, lse, keyOffsets, keyRows, shape)],
      ['bwd twin', () => ops.attentionBackward(dout, q, k, v, out, lse, none, keyRows, shape)],
    ]);
    const ms = await medianMs(tasks, 5);
    const keys = keyRows.length;
    for (const dir of ['fwd', 'bwd'] as const) {
      const kernel = ms.get(dir)! - ms.get(`${dir} twin`)!;
      const flops = (dir === 'fwd' ? 4 : 10) * headDim * keys * qHeads;
      rows.push({ case: c.name, rows: T, keys, pass: dir, 'raw ms': ms.get(dir)!, 'twin ms': ms.get(`${dir} twin`)!, 'kernel ms': kernel, 'GFLOP/s': flops / kernel / 1e6 });
    }
  }
  printTable(rows);
}

await main();
