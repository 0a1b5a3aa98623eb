/**
 * A full training step (forward + backward to LoRA) on the default model: the trie layout vs
 * the paper's padded batches of 32 (each target its own sequence, prompt recomputed, padded to
 * the batch's longest target; the batches' gradients accumulated), for RNG 1–10 and the 200
 * baby names. Per case: positions computed, step time, peak memory, and achieved GFLOP/s as a
 * fraction of the ceiling measured in the same run: an external BLAS (MKL through torch,
 * OpenBLAS through numpy) on the step's own GEMM shapes and threads (bench/step-cost.ts; for the
 * padded layout, at its batches' mean rows).
 *
 *   npx tsx bench/step.bench.ts [--repeats N] [--cases rng:trie,names:trie,…] [--out bench/results/cpu-step.json]
 *
 * `--cases` picks task:layout pairs (default all four; the padded names case is about a minute a
 * step on two cores). Threads: all cores, or DIFFUSE_THREADS.
 * Each case runs in a child process of its own, so peak memory is that case's alone.
 */
import { execFileSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { loadModel } from '../lib/model/load.js';
import type { Model } from '../lib/model/model.js';
import { preset } from '../lib/model/presets.js';
import { native } from '../lib/native.js';
import { Progress } from '../lib/progress.js';
import { buildTrieBatch, type PreparedPrompt, type TrieBatch } from '../lib/targets/target-set.js';
import { loadTasks } from '../lib/tasks/index.js';
import { stepCeiling, stepFlops, type StepCeiling } from './step-cost.js';

const tasks = { rng: 'data/tasks/reference/prompts/numbers/rng-0.json', names: 'data/tasks/reference/prompts/baby-names/train.json' } as const;
type TaskKey = keyof typeof tasks;
type Layout = 'trie' | 'padded';

interface CaseResult {
  task: TaskKey;
  layout: Layout;
  positions: number;
  batches: number;
  stepSeconds: number[];
  /** Process CPU seconds of each step: below threads × stepSeconds, the step lost cores to other processes. */
  stepCpuSeconds: number[];
  medianSeconds: number;
  peakRssMiB: number;
  baselineRssMiB: number;
  flops: number;
  gflops: number;
}

/**
 * The reference's layout: targets in batches of 32, each target a chain prompt ⊕ target padded
 * with the end-of-sequence token to the batch's longest target; every position is computed
 * (the padding too) and only real target tokens carry loss edges.
 */
function paddedBatches(prompt: PreparedPrompt, eos: number, batchSize = 32): TrieBatch[] {
  const out: TrieBatch[] = [];
  const seqs = prompt.sequences;
  for (let i = 0; i < seqs.length; i += batchSize) {
    const chunk = seqs.slice(i, i + batchSize);
    const longest = Math.max(...chunk.map((s) => s.tokens.length));
    const tokens: number[] = [], parents: number[] = [], edgeRows: number[] = [], edgeTokens: number[] = [], edgeWeights: number[] = [];
    for (const s of chunk) {
      const first = tokens.length;
      const row = [...prompt.promptTokens, ...s.tokens, ...new Array<number>(longest - s.tokens.length).fill(eos)];
      row.forEach((t, j) => {
        tokens.push(t);
        parents.push(j === 0 ? -1 : first + j - 1);
      });
      s.tokens.forEach((t, j) => {
        edgeRows.push(first + prompt.promptTokens.length - 1 + j);
        edgeTokens.push(t);
        edgeWeights.push(s.weight);
      });
    }
    out.push({
      batch: { tokens: Int32Array.from(tokens), parents: Int32Array.from(parents), edgeRows: Int32Array.from(edgeRows), edgeTokens: Int32Array.from(edgeTokens), edgeWeights: Float32Array.from(edgeWeights) },
      prompts: [prompt],
      pathEdges: [],
      positions: tokens.length,
      paddedPositions: tokens.length,
    });
  }
  return out;
}

async function runCase(task: TaskKey, layout: Layout, repeats: number): Promise<CaseResult> {
  const model: Model = await loadModel('smollm2-135m-instruct', { device: 'cpu', progress: new Progress({ mode: 'silent' }) });
  const [t] = await loadTasks([tasks[task]], { cwd: process.cwd() });
  const prompts = model.prepare(t.prompts);
  const batches = layout === 'trie' ? [buildTrieBatch(prompts)] : paddedBatches(prompts[0], model.tokenizer.eosTokenId ?? 0);
  const adapter = await model.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  const baseline = process.resourceUsage().maxRSS / 1024;
  const cpu: number[] = [];
  const step = async () => {
    const t0 = performance.now(), c0 = process.cpuUsage();
    await adapter.zeroGrad();
    for (const b of batches) await model.step(b, adapter);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e6);
    return (performance.now() - t0) / 1000;
  };
  await step();
  cpu.length = 0;
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) times.push(await step());
  const sorted = [...times].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  const flops = batches.reduce((s, b) => s + stepFlops(model.config, b, 4), 0);
  const result: CaseResult = {
    task,
    layout,
    positions: batches.reduce((s, b) => s + b.positions, 0),
    batches: batches.length,
    stepSeconds: times,
    stepCpuSeconds: cpu,
    medianSeconds: median,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    baselineRssMiB: baseline,
    flops,
    gflops: flops / median / 1e9,
  };
  adapter.dispose();
  model.dispose();
  return result;
}

const smollm2 = preset('smollm2-135m');

/** CPU seconds over wall seconds × threads, summed over the timed steps. */
function cpuShare(r: CaseResult, threads: number): number {
  const wall = r.stepSeconds.reduce((a, b) => a + b, 0), cpu = r.stepCpuSeconds.reduce((a, b) => a + b, 0);
  return cpu / (wall * threads);
}

async function main() {
  const args = process.argv.slice(2);
  const repeats = Number(args[args.indexOf('--repeats') + 1] || 3) || 3;
  const worker = args.indexOf('--worker');
  if (worker >= 0) {
    const [task, layout] = args[worker + 1].split(':') as [TaskKey, Layout];
    process.stdout.write(JSON.stringify(await runCase(task, layout, repeats)));
    return;
  }
  const out = args.includes('--out') ? args[args.indexOf('--out') + 1] : 'bench/results/cpu-step.json';
  const self = fileURLToPath(import.meta.url);
  const all = (Object.keys(tasks) as TaskKey[]).flatMap((task) => (['trie', 'padded'] as Layout[]).map((layout) => `${task}:${layout}`));
  const chosen = args.includes('--cases') ? args[args.indexOf('--cases') + 1].split(',') : all;
  const unknown = chosen.filter((c) => !all.includes(c));
  if (unknown.length > 0) throw new Error(`unknown case(s) ${unknown.join(', ')}; the cases are ${all.join(', ')}`);
  const loadBefore = loadavg();
  const results: CaseResult[] = [];
  for (const task of Object.keys(tasks) as TaskKey[])
    for (const layout of ['trie', 'padded'] as Layout[]) {
      if (!chosen.includes(`${task}:${layout}`)) continue;
      process.stderr.write(`${task} ${layout}…\n`);
      const json = execFileSync(process.execPath, ['--import', 'tsx', self, '--worker', `${task}:${layout}`, '--repeats', String(repeats)], { encoding: 'utf8', maxBuffer: 1 << 24 });
      results.push(JSON.parse(json) as CaseResult);
    }
  const threads = native().threadCount();
  const ceilings = new Map<string, StepCeiling>();
  for (const r of results) if (!ceilings.has(`${r.task}:${r.layout}`)) ceilings.set(`${r.task}:${r.layout}`, stepCeiling(smollm2, Math.round(r.positions / r.batches), threads));
  const rows = results.map((r) => {
    const ceiling = ceilings.get(`${r.task}:${r.layout}`)!;
    return { ...r, ceilingGflops: ceiling.gflops, fractionOfCeiling: r.gflops / ceiling.gflops, ceiling };
  });
  const table = [
    `ceiling: the better of ${rows[0].ceiling.libraries.torch} and ${rows[0].ceiling.libraries.numpy} on the step's GEMM shapes, ${threads} threads`,
    'task   layout  positions  step (s)  CPU share  peak RSS (MiB)  GFLOP/s  ceiling  of ceiling',
    ...rows.map((r) => `${r.task.padEnd(6)} ${r.layout.padEnd(7)} ${String(r.positions).padStart(9)} ${r.medianSeconds.toFixed(3).padStart(9)} ${`${(100 * cpuShare(r, threads)).toFixed(0)}%`.padStart(10)} ${r.peakRssMiB.toFixed(0).padStart(15)} ${r.gflops.toFixed(1).padStart(8)} ${r.ceilingGflops.toFixed(1).padStart(8)} ${(100 * r.fractionOfCeiling).toFixed(0).padStart(10)}%`),
  ];
  for (const task of Object.keys(tasks) as TaskKey[]) {
    const trie = rows.find((r) => r.task === task && r.layout === 'trie');
    const padded = rows.find((r) => r.task === task && r.layout === 'padded');
    if (!trie || !padded) continue;
    table.push(`${task}: ${(padded.positions / trie.positions).toFixed(1)}× fewer positions, ${(padded.medianSeconds / trie.medianSeconds).toFixed(1)}× less time, ${(padded.peakRssMiB - padded.baselineRssMiB).toFixed(0)} → ${(trie.peakRssMiB - trie.baselineRssMiB).toFixed(0)} MiB above the loaded model`);
  }
  process.stdout.write(`${table.join('\n')}\n`);
  const machine = { cpu: cpus()[0]?.model, threads, isa: native().gemmIsa(), loadAverage: { before: loadBefore, after: loadavg() }, date: new Date().toISOString(), commit: execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim() };
  writeFileSync(out, `${JSON.stringify({ machine, repeats, cases: rows }, null, 2)}\n`);
  process.stderr.write(`wrote ${out}\n`);
}

await main();
