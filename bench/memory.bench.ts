/**
 * Peak memory of one training step on RNG 1–10 with random-init Llama-2 presets whose weights
 * are kept compact (bf16, Q8_0), against the issue's targets: llama-2-7b bf16 ≤ 16 GiB, Q8_0
 * ≤ 10 GiB; llama-2-13b Q8_0 ≤ 20 GiB (and Q4_K for both, which has no target). Also seconds per step and the fraction of the ceiling:
 * an external BLAS (MKL through torch, OpenBLAS through numpy) on the step's GEMM shapes and
 * threads, measured in the same run after the cases (bench/step-cost.ts).
 *
 *   npx tsx bench/memory.bench.ts [--cases 7b-bf16,7b-q8_0,13b-q8_0,7b-q4_k,13b-q4_k] [--steps 2] [--out FILE]
 *   npx tsx bench/memory.bench.ts --cases smollm2-bf16      (a quick check of the harness)
 *
 * Each case runs in a child process of its own, so its peak RSS (getrusage's maxrss: the
 * weights, the step's activations and scratch, Node itself) is that case's alone. The RNG
 * prompt is tokenised with SmolLM2's tokenizer (a random-init model has none) and the ids
 * folded into the preset's vocabulary: the trie's shape, which sets the step's cost, is the
 * real one. These cases need that much free memory: check `free -g` first.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

import { defaultModelPath } from '../lib/model/default-model.js';
import { loadModel } from '../lib/model/load.js';
import { preset, type PresetName } from '../lib/model/presets.js';
import { native } from '../lib/native.js';
import { buildTrieBatch, preparePrompt, type TrieBatch } from '../lib/targets/target-set.js';
import { loadTasks } from '../lib/tasks/index.js';
import { loadTokenizer } from '../lib/tokenizer/index.js';
import { stepCeiling, stepFlops } from './step-cost.js';

const GiB = 1024 ** 3;
const cases: Record<string, { preset: PresetName; dtype: string; targetGiB?: number }> = {
  '7b-bf16': { preset: 'llama-2-7b', dtype: 'bf16', targetGiB: 16 },
  '7b-q8_0': { preset: 'llama-2-7b', dtype: 'q8_0', targetGiB: 10 },
  '13b-q8_0': { preset: 'llama-2-13b', dtype: 'q8_0', targetGiB: 20 },
  '7b-q4_k': { preset: 'llama-2-7b', dtype: 'q4_k' },
  '13b-q4_k': { preset: 'llama-2-13b', dtype: 'q4_k' },
  'smollm2-bf16': { preset: 'smollm2-135m', dtype: 'bf16' },
};
const task = 'data/tasks/reference/prompts/numbers/rng-0.json';

interface CaseResult {
  name: string;
  preset: PresetName;
  dtype: string;
  targetGiB?: number;
  loadSeconds: number;
  weightGiB: number;
  rssAfterLoadGiB: number;
  peakRssGiB: number;
  positions: number;
  stepSeconds: number[];
  flops: number;
  gflops: number;
}

async function rngBatch(vocab: number): Promise<TrieBatch> {
  const tokenizer = await loadTokenizer(defaultModelPath());
  const [t] = await loadTasks([task], { cwd: process.cwd() });
  const trie = buildTrieBatch(t.prompts.map((p, i) => preparePrompt(tokenizer, p, i)));
  trie.batch.tokens = trie.batch.tokens.map((x) => x % vocab);
  trie.batch.edgeTokens = trie.batch.edgeTokens.map((x) => x % vocab);
  return trie;
}

async function runCase(name: string, steps: number): Promise<CaseResult> {
  const c = cases[name];
  const config = preset(c.preset);
  const trie = await rngBatch(config.vocabSize);
  const t0 = performance.now();
  const model = await loadModel({ config: c.preset, randomInit: true, dtype: c.dtype }, { device: 'cpu' });
  const loadSeconds = (performance.now() - t0) / 1000;
  const rssAfterLoad = process.memoryUsage().rss;
  const adapter = await model.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  const stepSeconds: number[] = [];
  for (let i = 0; i < steps; i++) {
    const s0 = performance.now();
    await adapter.zeroGrad();
    await model.step(trie, adapter);
    stepSeconds.push((performance.now() - s0) / 1000);
  }
  const flops = stepFlops(config, trie, 4);
  const best = Math.min(...stepSeconds);
  const result: CaseResult = {
    name,
    preset: c.preset,
    dtype: c.dtype,
    targetGiB: c.targetGiB,
    loadSeconds,
    weightGiB: model.live().info().weightBytes / GiB,
    rssAfterLoadGiB: rssAfterLoad / GiB,
    peakRssGiB: (process.resourceUsage().maxRSS * 1024) / GiB,
    positions: trie.positions,
    stepSeconds,
    flops,
    gflops: flops / best / 1e9,
  };
  adapter.dispose();
  model.dispose();
  return result;
}

async function main() {
  const args = process.argv.slice(2);
  const opt = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  const steps = Number(opt('--steps', '2'));
  const worker = args.indexOf('--worker');
  if (worker >= 0) {
    process.stdout.write(JSON.stringify(await runCase(args[worker + 1], steps)));
    return;
  }
  const names = opt('--cases', '7b-bf16,7b-q8_0,13b-q8_0').split(',');
  for (const n of names) if (!cases[n]) throw new Error(`unknown case '${n}'; known: ${Object.keys(cases).join(', ')}`);
  const out = opt('--out', 'bench/results/cpu-memory.json');
  const self = fileURLToPath(import.meta.url);
  const results: CaseResult[] = [];
  for (const n of names) {
    process.stderr.write(`${n}…\n`);
    const json = execFileSync(process.execPath, ['--import', 'tsx', self, '--worker', n, '--steps', String(steps)], { encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'inherit'] });
    results.push(JSON.parse(json) as CaseResult);
  }
  const threads = native().threadCount();
  const rows = results.map((r) => {
    const ceiling = stepCeiling(preset(r.preset), r.positions, threads);
    return { ...r, ceilingGflops: ceiling.gflops, fractionOfCeiling: r.gflops / ceiling.gflops, ceiling, meetsTarget: r.targetGiB === undefined ? null : r.peakRssGiB <= r.targetGiB };
  });
  const table = [
    `ceiling: the better of ${rows[0].ceiling.libraries.torch} and ${rows[0].ceiling.libraries.numpy} on each step's GEMM shapes, ${threads} threads`,
    'case         weights (GiB)  peak RSS (GiB)  target  positions  steps (s)          GFLOP/s  ceiling  of ceiling',
    ...rows.map(
      (r) =>
        `${r.name.padEnd(12)} ${r.weightGiB.toFixed(2).padStart(13)} ${r.peakRssGiB.toFixed(2).padStart(15)} ${(r.targetGiB ? `≤ ${r.targetGiB}` : '-').padStart(7)} ${String(r.positions).padStart(10)}  ${r.stepSeconds.map((s) => s.toFixed(1)).join(', ').padEnd(17)} ${r.gflops.toFixed(1).padStart(8)} ${r.ceilingGflops.toFixed(1).padStart(8)} ${(100 * r.fractionOfCeiling).toFixed(0).padStart(10)}%`,
    ),
  ];
  process.stdout.write(`${table.join('\n')}\n`);
  const machine = { cpu: cpus()[0]?.model, threads, isa: native().gemmIsa(), date: new Date().toISOString(), commit: execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim() };
  writeFileSync(out, `${JSON.stringify({ machine, steps, cases: rows }, null, 2)}\n`);
  process.stderr.write(`wrote ${out}\n`);
}

await main();
