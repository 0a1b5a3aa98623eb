/**
 * diffuse logprobs: the exact distribution a model puts on each task's target set, as a table
 * with a bar per target or as JSON.
 */
import type { Command } from 'commander';

import { InvalidArgumentError } from '../../errors.js';
import type { Adapter } from '../../model/adapter.js';
import type { TargetDistribution } from '../../model/model.js';
import type { TargetRequest } from '../../targets/target-set.js';
import { loadTasks } from '../../tasks/index.js';
import { addModelOptions, bar, clip, loadCliModel, parseNumber, percent, type ModelOptions } from '../common.js';

/** The flags that name a model, an adapter and the prompts to measure; eval takes them too. */
export interface LogprobsOptions extends ModelOptions {
  task?: string[];
  request?: string;
  targets?: string[];
  weights?: number[];
  response?: string[];
  eos: boolean;
  adapter?: string;
  json?: boolean;
}

/** The task prompts named on the command line: --task files/ids, or one --request with --targets. */
export async function promptsFromOptions(o: Pick<LogprobsOptions, 'task' | 'request' | 'targets' | 'weights' | 'response' | 'eos'>) {
  if (o.task?.length && o.request !== undefined) throw new InvalidArgumentError('give either --task or --request with --targets, not both');
  if (o.request !== undefined) {
    if (!o.targets?.length) throw new InvalidArgumentError('--request needs --targets T1 T2 … (the valid answers)');
    const prompt: TargetRequest = { request: o.request, targets: o.targets, eos: o.eos };
    if (o.weights) prompt.weights = o.weights;
    if (o.response) prompt.response = o.response;
    return [{ name: 'command line', prompts: [prompt] }];
  }
  if (!o.task?.length) throw new InvalidArgumentError('say what to measure: --task FILE.json|DIR|ID … or --request TEXT --targets T1 T2 …');
  const tasks = await loadTasks(o.task, { cwd: process.cwd() });
  return tasks.map((t) => ({ name: t.name, prompts: t.prompts }));
}

export function printDistribution(d: TargetDistribution, out: (line: string) => void, maxRows = 40): void {
  out(`  ${JSON.stringify(clip(d.request, 100))}`);
  const rows = d.targets.map((t, i) => ({ ...t, i })).sort((a, b) => b.prob - a.prob);
  const shown = rows.slice(0, maxRows);
  const top = Math.max(...rows.map((r) => r.prob), 1e-12);
  const width = Math.max(6, ...shown.map((r) => clip(r.target, 28).length));
  for (const r of shown) out(`  ${clip(r.target, 28).padEnd(width)}  ${percent(r.prob).padStart(8)}  ${r.logprob.toFixed(3).padStart(8)}  ${bar(r.prob / top, 30)}`);
  if (rows.length > shown.length) out(`  … ${rows.length - shown.length} more targets (use --json for all)`);
  const uniform = Math.log(d.targets.length);
  out(
    `  entropy ${d.entropy.toFixed(3)} nats of ${uniform.toFixed(3)} possible · KL(p*‖model) ${d.kl.toFixed(3)} · outside the set ${percent(d.outsideMass)} · ${d.positions} positions (reference: ${d.paddedPositions})`,
  );
}

/** The flags of LogprobsOptions that name the prompts and the adapter (eval takes them too). */
export function addPromptOptions(command: Command): Command {
  return command
    .option('-t, --task <task...>', 'task files (the reference JSON format), directories of them, or built-in task ids')
    .option('--request <text>', 'a prompt, instead of --task')
    .option('--targets <target...>', 'the valid answers to --request')
    .option('--weights <w...>', 'desired probabilities of --targets (default uniform)', (v, prev: number[] = []) => [...prev, parseNumber(v, '--weights')])
    .option('--response <text...>', 'text the answer starts with (several are averaged)')
    .option('--no-eos', 'do not end targets with the end-of-turn token')
    .option('--adapter <path>', 'a LoRA adapter to apply: a PEFT directory or a llama.cpp GGUF LoRA file');
}

export function registerLogprobs(program: Command): void {
  addModelOptions(
    addPromptOptions(
      program
        .command('logprobs')
        .description("the exact probability the model gives each target of a task, and the set's entropy, KL and outside mass"),
    ).option('--json', 'print one JSON object instead of tables'),
  ).action(async (o: LogprobsOptions) => {
    const tasks = await promptsFromOptions(o);
    const model = await loadCliModel(o, Boolean(o.json));
    let adapter: Adapter | undefined;
    try {
      if (o.adapter) adapter = await model.loadAdapter(o.adapter);
      const results: { task: string; distribution: TargetDistribution }[] = [];
      const warn = (m: string) => process.stderr.write(`diffuse: warning: ${m}\n`);
      for (const task of tasks) {
        const distributions = await model.targetDistributions(task.prompts, { adapter, warn });
        distributions.forEach((distribution, i) => results.push({ task: task.prompts.length > 1 ? `${task.name}#${i}` : task.name, distribution }));
      }
      if (o.json) {
        const json = {
          model: o.model,
          device: model.device,
          adapter: o.adapter ?? null,
          tasks: results.map(({ task, distribution: d }) => ({
            task,
            request: d.request,
            targets: d.targets.map((t) => ({ target: t.target, tokens: t.tokens, logprob: t.logprob, prob: t.prob, weight: t.weight })),
            entropy: d.entropy,
            kl: d.kl,
            outsideMass: d.outsideMass,
            positions: d.positions,
            paddedPositions: d.paddedPositions,
          })),
        };
        process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
      } else {
        const out = (line: string) => process.stdout.write(`${line}\n`);
        for (const { task, distribution } of results) {
          out(`\n${task}`);
          printDistribution(distribution, out);
        }
      }
    } finally {
      adapter?.dispose();
      model.dispose();
    }
  });
}
