/**
 * diffuse demo: the main job, end to end, on the default model. Measure how collapsed the base
 * model is on "pick a random number from 1 to 10", LoRA-tune it toward the uniform distribution
 * over {1} … {10}, and measure again — on the trained task and on tasks it never saw (another
 * number range, fruits, days of the week). Writes OUT/report.html, OUT/summary.json (the eval
 * JSON of base and tuned) and the adapter in OUT/adapter.
 */
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import type { Command } from 'commander';

import { InvalidArgumentError } from '../../errors.js';
import { makeDirectory, writeTextAtomically } from '../../atomic-write.js';
import { evaluate, type Evaluation, type EvaluateOptions, type TaskEvaluation } from '../../eval/evaluate.js';
import { renderReport } from '../../eval/report.js';
import type { Adapter } from '../../model/adapter.js';
import { Progress } from '../../progress.js';
import { loadTasks, type Task } from '../../tasks/index.js';
import { addModelOptions, loadCliModel, parseNumber, parsePositiveInt, parseWholeNumber, type ModelOptions } from '../common.js';
import { runTraining, type TrainingOutcome } from '../training-run.js';
import { printTask } from './eval.js';

/** The task the demo trains on, and the tasks it then measures the tuned model on, untrained. */
export const DEMO_TRAINED_TASK = 'rng:1-10';
export const DEMO_HELD_OUT_TASKS = ['rng:1-100', 'fruits', 'days-dates:days'];

/** What the demo writes into OUT; an OUT holding anything else is never touched. */
const DEMO_OUTPUTS = ['report.html', 'summary.json', 'adapter', 'checkpoints', 'train-log.jsonl'];

interface DemoOptions extends ModelOptions {
  out: string;
  iters: number;
  lr: number;
  rank: number;
  seed: number;
  samples: number;
  maxTokens: number;
  force?: boolean;
  json?: boolean;
}

/**
 * Checks that OUT can take the demo's results: missing or empty, or holding an earlier demo's
 * results and --force given; a directory holding anything the demo did not write is refused,
 * so nothing saved is lost. Returns what must be removed before the run writes (the earlier
 * results), which the caller removes only once the model has loaded.
 */
async function checkOutDir(dir: string, force: boolean): Promise<string[]> {
  if (!existsSync(dir)) return [];
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (error) {
    throw new InvalidArgumentError(`--out ${dir} exists and is not a readable directory (${(error as Error).message}); give another --out DIR`);
  }
  const foreign = entries.filter((e) => !DEMO_OUTPUTS.includes(e));
  if (foreign.length > 0)
    throw new InvalidArgumentError(`--out ${dir} holds files the demo did not write (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', …' : ''}); give an empty or new directory`);
  if (entries.length > 0 && !force)
    throw new InvalidArgumentError(`--out ${dir} already holds a demo's results; add --force to replace them, or give another --out DIR`);
  return entries.map((e) => join(dir, e));
}

const f2 = (x: number) => x.toFixed(2);
const pct = (p: number) => (p >= 0.001 || p === 0 ? `${(p * 100).toFixed(1)}%` : `${(p * 100).toExponential(0)}%`);

/** One line per task: normalised entropy, KL and the mass outside the set, base → tuned. */
function printComparison(base: Evaluation, tuned: Evaluation, out: (line: string) => void): void {
  const rows = base.tasks.map((b, i) => {
    const t = tuned.tasks[i];
    const name = `${b.task}${i === 0 ? ' (trained)' : ' (never trained on)'}`;
    const normalised = (e: TaskEvaluation) => e.exact!.entropy / e.exact!.optimalEntropy;
    return [
      name,
      `${f2(normalised(b))} → ${f2(normalised(t))}`,
      `${f2(b.exact!.kl)} → ${f2(t.exact!.kl)}`,
      `${pct(b.exact!.outsideMass)} → ${pct(t.exact!.outsideMass)}`,
    ];
  });
  const header = ['task', 'entropy / max', 'KL(p*‖model)', 'outside the set'];
  const widths = header.map((h, k) => Math.max(h.length, ...rows.map((r) => r[k].length)));
  const line = (cells: string[]) => out(`  ${cells.map((c, k) => c.padEnd(widths[k])).join('   ')}`.trimEnd());
  line(header);
  for (const r of rows) line(r);
}

export function registerDemo(program: Command): void {
  addModelOptions(
    program
      .command('demo')
      .description('the whole job on the default model: measure the collapse on RNG 1–10, LoRA-tune it away, measure again on that task and on tasks never trained on; writes a report')
      .option('-o, --out <dir>', 'where report.html, summary.json and adapter/ go', 'demo')
      .option('--iters <n>', 'training passes over the five RNG 1–10 prompts', (v) => parsePositiveInt(v, '--iters'), 10)
      .option('--lr <lr>', 'AdamW learning rate (1e-3: a 135M model needs more than the paper\'s 5e-5 for 7B)', (v) => parseNumber(v, '--lr'), 1e-3)
      .option('--rank <r>', 'LoRA rank (alpha is twice the rank, as the paper\'s r = 4, α = 8)', (v) => parsePositiveInt(v, '--rank'), 4)
      .option('--seed <s>', 'seed of the adapter init, the prompt order and the samples', (v) => parseWholeNumber(v, '--seed'), 0)
      .option('-n, --samples <n>', 'answers sampled per prompt of the trained task, before and after (0: exact measures only)', (v) => parseWholeNumber(v, '--samples'), 20)
      .option('--max-tokens <n>', 'longest sampled answer, in tokens', (v) => parsePositiveInt(v, '--max-tokens'), 16)
      .option('--force', 'replace the results of an earlier demo in --out')
      .option('--json', 'print summary.json to stdout instead of the tables'),
  ).action(async (o: DemoOptions) => {
    if (!(o.lr > 0)) throw new InvalidArgumentError(`--lr must be > 0, not ${o.lr}`);
    const outDir = resolve(o.out);
    const quiet = Boolean(o.json);
    const progress = new Progress({ json: quiet });
    const say = (line: string) => progress.log(line);
    const earlier = await checkOutDir(outDir, Boolean(o.force));

    const [trained, ...heldOut] = await loadTasks([DEMO_TRAINED_TASK, ...DEMO_HELD_OUT_TASKS]);
    const model = await loadCliModel(o, quiet);
    let adapter: Adapter | undefined;
    try {
      for (const path of earlier) await rm(path, { recursive: true, force: true });
      await makeDirectory(outDir);
      const warn = (m: string) => process.stderr.write(`diffuse: warning: ${m}\n`);
      const measure = async (label: string, tuning: Adapter | undefined): Promise<Evaluation> => {
        say(`measuring the ${label} model: exactly on ${[trained, ...heldOut].map((t) => t.name).join(', ')}${o.samples > 0 ? `, and ${o.samples} samples per prompt of ${trained.name}` : ''}`);
        const options: EvaluateOptions = { adapter: tuning, maxTokens: o.maxTokens, seed: o.seed, progress, warn };
        const sampled = await evaluate(model, [trained], { ...options, samples: o.samples });
        const exact = await evaluate(model, heldOut, options);
        return { ...sampled, tasks: [...sampled.tasks, ...exact.tasks] };
      };

      const base = await measure('base', undefined);
      const prompts = model.prepare(trained.prompts, { warn });
      adapter = await model.createAdapter({ rank: o.rank, alpha: 2 * o.rank, seed: o.seed });
      say(`training a rank-${adapter.rank} LoRA (${adapter.parameterCount.toLocaleString('en')} parameters) on the ${prompts.length} prompts of ${trained.name}: ${o.iters} passes, lr ${o.lr}`);
      const outcome: TrainingOutcome = await runTraining({
        model,
        adapter,
        prompts,
        names: prompts.map((_, i) => `${trained.name}#${i}`),
        options: { nIters: o.iters, lr: o.lr, seed: o.seed },
        outDir: join(outDir, 'adapter'),
        checkpointDir: join(outDir, 'checkpoints'),
        logFile: join(outDir, 'train-log.jsonl'),
        progress,
      });
      if (outcome.stopped === 'signal') {
        say(`stopped: the adapter so far is in ${outcome.adapterDir}`);
        process.exitCode = 130;
        return;
      }
      const tuned = await measure('tuned', adapter);

      const training = { task: trained.name, passes: outcome.passes, steps: outcome.steps, seconds: outcome.elapsed, lr: o.lr, rank: o.rank, lastPass: outcome.lastPass ?? null };
      const summary = { model: model.spec, device: model.device, trainedOn: trained.name, heldOut: heldOut.map((t) => t.name), training, adapter: outcome.adapterDir, base, tuned };
      await writeTextAtomically(join(outDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
      const report = renderReport(
        [
          { label: 'base', evaluation: base },
          { label: 'tuned', evaluation: tuned },
        ],
        { title: `diffuse demo: ${model.spec}, tuned on ${trained.name}` },
      );
      await writeTextAtomically(join(outDir, 'report.html'), report);

      if (o.json) {
        process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
        return;
      }
      const out = (line: string) => process.stdout.write(`${line}\n`);
      out(`\nbefore → after ${outcome.steps} training steps (${outcome.elapsed.toFixed(1)} s) on ${trained.name} only:`);
      printComparison(base, tuned, out);
      printTask([base.tasks[0], tuned.tasks[0]], ['base', 'tuned'], out);
      out(`\nwrote ${join(outDir, 'report.html')} (open it in a browser), ${join(outDir, 'summary.json')} and the adapter in ${outcome.adapterDir}`);
      out(`use the adapter: diffuse eval --adapter ${outcome.adapterDir} --compare-base --task ${heldOut[1].name}`);
    } finally {
      adapter?.dispose();
      model.dispose();
    }
  });
}
