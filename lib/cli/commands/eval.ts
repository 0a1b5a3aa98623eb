/**
 * diffuse eval: how diffuse a model's answers are on tasks — exactly over each target set, and
 * from samples when asked — as a table with bars, as JSON, and as an HTML report; with
 * --adapter --compare-base, the base model beside the tuned one.
 */
import { resolve } from 'node:path';

import type { Command } from 'commander';

import { InvalidArgumentError } from '../../errors.js';
import { writeTextAtomically } from '../../atomic-write.js';
import { evaluate, type Evaluation, type EvaluateOptions, type EvaluationSettings, type TaskEvaluation } from '../../eval/evaluate.js';
import type { Interval } from '../../eval/stats.js';
import { renderReport, targetLabel, type ReportRun } from '../../eval/report.js';
import type { Adapter } from '../../model/adapter.js';
import { Progress } from '../../progress.js';
import { addModelOptions, bar, clip, loadCliModel, parseNumber, parsePositiveInt, parseWholeNumber, percent as commonPercent } from '../common.js';
import { addPromptOptions, promptsFromOptions, type LogprobsOptions } from './logprobs.js';

/** The flags: the prompts and model of logprobs, the sampling settings, and eval's own. */
interface EvalOptions extends LogprobsOptions, EvaluationSettings {
  compareBase?: boolean;
  batchSize?: number;
  report?: string;
}

type Out = (line: string) => void;

const f2 = (x: number) => x.toFixed(2);
const percent = (p: number) => (p === 0 ? '0%' : commonPercent(p));
const count = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(1));
const withInterval = (value: string, i: Interval | undefined, f: (x: number) => string) => (i ? `${value} [${f(i[0])}, ${f(i[1])}]` : value);

/** The figures of one task, a column per run. */
function printFigures(tasks: TaskEvaluation[], labels: string[], out: Out): void {
  const rows: [string, (string | undefined)[]][] = [];
  const add = (name: string, get: (t: TaskEvaluation) => string | undefined) => {
    const cells = tasks.map(get);
    if (cells.some((c) => c !== undefined)) rows.push([name, cells]);
  };
  add('entropy (exact)', (t) => t.exact && `${f2(t.exact.entropy)} of ${f2(t.exact.optimalEntropy)} nats`);
  add('KL(p*‖model)', (t) => t.exact && f2(t.exact.kl));
  add('outside the set', (t) => t.exact && percent(t.exact.outsideMass));
  add('expected coverage', (t) => t.exact && `${t.exact.expectedCoverage.value.toFixed(1)} in ${t.exact.expectedCoverage.n} samples`);
  add('coverage', (t) => t.sampled && withInterval(count(t.sampled.coverage), t.sampled.intervals.coverage, count));
  add('in the set', (t) => (t.sampled?.targetCoverage !== undefined ? `${count(t.sampled.targetCoverage)} distinct targets` : undefined));
  add('entropy (sampled)', (t) => t.sampled && withInterval(f2(t.sampled.entropy), t.sampled.intervals.entropy, f2));
  add('valid', (t) => t.sampled && withInterval(percent(t.sampled.validRate), t.sampled.intervals.validRate, percent));
  add('unigram diversity', (t) => (t.sampled && !t.exact ? withInterval(t.sampled.unigramDiversity.toFixed(3), t.sampled.intervals.unigramDiversity, (x) => x.toFixed(3)) : undefined));
  const nameWidth = Math.max(...rows.map(([n]) => n.length));
  const widths = labels.map((l, i) => Math.max(l.length, ...rows.map(([, cells]) => (cells[i] ?? '—').length)));
  if (labels.length > 1) out(`  ${''.padEnd(nameWidth)}  ${labels.map((l, i) => l.padEnd(widths[i])).join('  ')}`.trimEnd());
  for (const [name, cells] of rows) out(`  ${name.padEnd(nameWidth)}  ${cells.map((c, i) => (c ?? '—').padEnd(widths[i])).join('  ')}`.trimEnd());
}

/** Rows of label, then per run a bar and a share; sorted by the first run, most first. */
function printBars(rows: { label: string; values: number[] }[], labels: string[], out: Out, maxRows = 25): void {
  const sorted = rows.slice().sort((a, b) => b.values[0] - a.values[0]);
  const top = Math.max(1e-12, ...rows.flatMap((r) => r.values));
  const shown = sorted.slice(0, maxRows);
  const width = Math.max(6, ...shown.map((r) => clip(r.label, 24).length));
  const barWidth = labels.length > 1 ? 16 : 30;
  if (labels.length > 1) out(`  ${''.padEnd(width)}  ${labels.map((l) => l.padEnd(barWidth + 9)).join(' ')}`.trimEnd());
  for (const r of shown) out(`  ${clip(r.label, 24).padEnd(width)}  ${r.values.map((v) => `${percent(v).padStart(7)} ${bar(v / top, barWidth).padEnd(barWidth)}`).join(' ')}`.trimEnd());
  if (sorted.length > shown.length) out(`  … ${sorted.length - shown.length} more (--json or --report for all)`);
}

export function printTask(tasks: TaskEvaluation[], labels: string[], out: Out): void {
  const task = tasks[0];
  out('');
  out(`${task.task}${task.prompts.length > 1 ? ` (${task.prompts.length} prompts; figures are means over them)` : ''}`);
  printFigures(tasks, labels, out);
  if (task.exact?.distribution) {
    out('');
    out(`  the model's distribution over the targets${task.prompts.length > 1 ? ', mean over prompts' : ''} (renormalised over the set):`);
    printBars(
      task.exact.distribution.map((t, k) => ({
        label: targetLabel(t.target),
        values: tasks.map((x) => {
          const d = x.exact!.distribution!;
          const inside = d.reduce((s, y) => s + y.prob, 0);
          return inside > 0 ? d[k].prob / inside : 0;
        }),
      })),
      labels,
      out,
    );
  } else if (task.exact) {
    task.prompts.forEach((p, i) => {
      if (!p.exact) return;
      out('');
      out(`  prompt ${i + 1}: ${clip(p.request, 90)}`);
      printBars(
        p.exact.distribution.map((t, k) => ({
          label: targetLabel(t.target),
          values: tasks.map((x) => {
            const d = x.prompts[i].exact!;
            const inside = d.distribution.reduce((s, y) => s + y.prob, 0);
            return inside > 0 ? d.distribution[k].prob / inside : 0;
          }),
        })),
        labels,
        out,
        12,
      );
    });
  }
  if (task.sampled && !task.exact) {
    task.prompts.forEach((_, i) => {
      out('');
      out(`  most frequent answers${task.prompts.length > 1 ? ` to prompt ${i + 1}` : ''} (share of samples):`);
      const values = new Map<string, number[]>();
      tasks.forEach((x, r) => {
        const s = x.prompts[i].sampled!;
        for (const a of s.answers) {
          if (!values.has(a.value)) values.set(a.value, new Array<number>(tasks.length).fill(0));
          values.get(a.value)![r] = a.count / s.n;
        }
      });
      if (values.size === 0) out('  (no sample had an answer in the task format)');
      else printBars([...values].map(([label, v]) => ({ label, values: v })), labels, out, 10);
    });
  }
  if (task.sampled?.fields) {
    out('');
    out('  biography fields: coverage / entropy (nats), then the most frequent values with counts');
    const cells = task.sampled.fields.map((f, k) =>
      tasks.map((x) => {
        const g = x.sampled!.fields![k];
        return `${String(g.coverage).padStart(4)} / ${f2(g.entropy)}  ${g.top.slice(0, 3).map((v) => `${clip(v.value, 16)} ${v.count}`).join(', ')}`;
      }),
    );
    const widths = tasks.map((_, r) => Math.max(labels[r].length, ...cells.map((c) => c[r].length)));
    if (tasks.length > 1) out(`  ${''.padEnd(12)} ${labels.map((l, r) => l.padEnd(widths[r])).join(' │ ')}`.trimEnd());
    task.sampled.fields.forEach((f, k) => out(`  ${f.field.padEnd(12)} ${cells[k].map((c, r) => c.padEnd(widths[r])).join(' │ ')}`.trimEnd()));
    const complete = tasks.map((x) => x.prompts[0].sampled?.completeBiographies);
    if (complete.every((c) => c !== undefined)) out(`  whole biographies (all six fields): ${complete.map((c, r) => `${labels[r]} ${percent(c!)}`).join(', ')}`);
  }
}

export function registerEval(program: Command): void {
  addModelOptions(
    addPromptOptions(
      program
        .command('eval')
        .description('how diffuse the answers are: exact distributions over target sets, and coverage, entropy and validity of samples'),
    )
      .option('--compare-base', 'with --adapter: evaluate the base model too, side by side')
      .option('-n, --samples <n>', 'samples per prompt (the paper: 1000); 0 measures only exactly', (v) => parseWholeNumber(v, '--samples'), 0)
      .option('--temperature <t>', 'sampling temperature (the paper: 1)', (v) => parseNumber(v, '--temperature'), 1)
      .option('--top-k <k>', 'sample from the k most likely tokens only (0: all)', (v) => parseWholeNumber(v, '--top-k'), 0)
      .option('--top-p <p>', 'sample from the smallest set of tokens holding this probability (1: all)', (v) => parseNumber(v, '--top-p'), 1)
      .option('--max-tokens <n>', 'longest sample, in tokens', (v) => parsePositiveInt(v, '--max-tokens'), 64)
      .option('--seed <s>', 'seed of the samples and of the bootstrap intervals', (v) => parseWholeNumber(v, '--seed'), 0)
      .option('--batch-size <n>', 'samples decoded together (default: what fits 1 GiB of KV cache, at most 256)', (v) => parsePositiveInt(v, '--batch-size'))
      .option('--json', 'print JSON (with --compare-base: {"base": …, "tuned": …}); samples included')
      .option('--report <file.html>', 'write a self-contained HTML report with the distributions as charts'),
  ).action(async (o: EvalOptions) => {
    if (o.compareBase && !o.adapter) throw new InvalidArgumentError('--compare-base compares a tuned model with its base; give the tuned one with --adapter DIR');
    const tasks = await promptsFromOptions(o);
    const open = tasks.find((t) => t.prompts.some((p) => p.targets.length === 0));
    if (open && o.samples === 0)
      throw new InvalidArgumentError(`task ${open.name} has a prompt without targets, which only samples can measure; add --samples N (the paper uses 1000)`);
    const model = await loadCliModel(o, Boolean(o.json));
    let adapter: Adapter | undefined;
    try {
      if (o.adapter) adapter = await model.loadAdapter(o.adapter);
      const progress = new Progress({ json: Boolean(o.json) });
      const warn = (m: string) => process.stderr.write(`diffuse: warning: ${m}\n`);
      const options: EvaluateOptions = {
        samples: o.samples,
        temperature: o.temperature,
        topK: o.topK,
        topP: o.topP,
        maxTokens: o.maxTokens,
        seed: o.seed,
        batchSize: o.batchSize,
        keepSamples: Boolean(o.json),
        progress,
        warn,
      };
      const runs: ReportRun[] = [];
      if (o.compareBase) runs.push({ label: 'base', evaluation: await evaluate(model, tasks, options) });
      runs.push({ label: adapter ? 'tuned' : 'base', evaluation: await evaluate(model, tasks, { ...options, adapter }) });

      const withAdapter = (e: Evaluation, label: string) => ({ ...e, adapter: label === 'tuned' ? resolve(o.adapter!) : null });
      if (o.json) {
        const json = runs.length > 1 ? Object.fromEntries(runs.map((r) => [r.label, withAdapter(r.evaluation, r.label)])) : withAdapter(runs[0].evaluation, runs[0].label);
        process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
      } else {
        const out = (line: string) => process.stdout.write(`${line}\n`);
        const labels = runs.map((r) => r.label);
        runs[0].evaluation.tasks.forEach((_, i) => printTask(runs.map((r) => r.evaluation.tasks[i]), labels, out));
        const speed = runs.flatMap((r) => (r.evaluation.throughput ? [`${r.label} ${r.evaluation.throughput.tokensPerSecond.toFixed(1)} tokens/s`] : []));
        if (speed.length > 0) out(`\nsampling: ${speed.join(', ')}`);
      }
      if (o.report) {
        const title = `diffuse eval: ${o.model}${o.adapter ? ` with ${o.adapter}` : ''}`;
        await writeTextAtomically(resolve(o.report), renderReport(runs, { title }));
        process.stderr.write(`wrote ${resolve(o.report)}\n`);
      }
    } finally {
      adapter?.dispose();
      model.dispose();
    }
  });
}
