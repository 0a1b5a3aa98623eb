/**
 * diffuse generate: the paper's synthetic-dataset job. N samples per prompt (of tasks, one
 * --request, or a prompts file) appended to a JSON Lines file one whole line at a time; a rerun
 * with the same arguments continues where a killed one stopped; at the end eval's sampled
 * figures of the file (coverage, entropy, each biography field's top values), printed and, with
 * --report, as an HTML report.
 */
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { existsSync } from 'node:fs';

import type { Command } from 'commander';

import { InvalidArgumentError } from '../../errors.js';
import { renderReport } from '../../eval/report.js';
import { checkWritable, Dataset, type GenerateSettings } from '../../generate/dataset.js';
import { promptsOfTasks, readPromptsFile, type PromptGroup } from '../../generate/prompts.js';
import { summarize } from '../../generate/summary.js';
import type { Adapter } from '../../model/adapter.js';
import { Progress } from '../../progress.js';
import { loadTasks } from '../../tasks/index.js';
import { addModelOptions, loadCliModel, parseNumber, parsePositiveInt, parseWholeNumber, type ModelOptions } from '../common.js';
import { printTask } from './eval.js';

interface GenerateFlags extends ModelOptions {
  adapter?: string;
  task?: string[];
  request?: string;
  prompts?: string;
  samples: number;
  out: string;
  temperature: number;
  topK: number;
  topP: number;
  maxTokens: number;
  seed: number;
  stop?: string[];
  batchSize?: number;
  json?: boolean;
  report?: string;
}

async function promptGroups(o: GenerateFlags): Promise<PromptGroup[]> {
  const given = [o.task?.length ? '--task' : '', o.request !== undefined ? '--request' : '', o.prompts ? '--prompts' : ''].filter(Boolean);
  if (given.length === 0) throw new InvalidArgumentError('say what to sample: --task FILE.json|DIR|ID …, --request TEXT or --prompts FILE.jsonl');
  if (given.length > 1) throw new InvalidArgumentError(`give one of --task, --request and --prompts, not ${given.join(' and ')}`);
  if (o.request !== undefined) return [{ name: 'request', prompts: [{ id: 'request', request: { request: o.request, targets: [] } }] }];
  if (o.prompts) return [await readPromptsFile(o.prompts)];
  return promptsOfTasks(await loadTasks(o.task!, { cwd: process.cwd() }));
}

/** The model as named: a path that exists is made absolute, so a rerun from elsewhere matches. */
const specOf = (spec: string) => (existsSync(spec) ? resolve(spec) : spec);

export function registerGenerate(program: Command): void {
  addModelOptions(
    program
      .command('generate')
      .description('write N samples per prompt to a JSON Lines file (appending, resumable), then their coverage, entropy and field values')
      .option('-t, --task <task...>', 'task files (the reference JSON format), directories of them, or built-in task ids')
      .option('--request <text>', 'one prompt, instead of --task')
      .option('--prompts <file.jsonl>', 'prompts, one JSON object per line: {"id": …, "request": …, "targets"?: […]}')
      .option('--adapter <path>', 'a LoRA adapter: a PEFT directory or a llama.cpp GGUF LoRA file')
      .requiredOption('-n, --samples <n>', 'samples per prompt', (v) => parsePositiveInt(v, '--samples'))
      .requiredOption('-o, --out <file.jsonl>', 'the JSON Lines file to append to (a rerun continues it)')
      .option('--temperature <t>', 'sampling temperature', (v) => parseNumber(v, '--temperature'), 1)
      .option('--top-k <k>', 'sample from the k most likely tokens only (0: all)', (v) => parseWholeNumber(v, '--top-k'), 0)
      .option('--top-p <p>', 'sample from the smallest set of tokens holding this probability (1: all)', (v) => parseNumber(v, '--top-p'), 1)
      .option('--max-tokens <n>', 'longest sample, in tokens', (v) => parsePositiveInt(v, '--max-tokens'), 64)
      .option('--seed <s>', 'seed of the samples (sample i of a prompt is draw stream i)', (v) => parseWholeNumber(v, '--seed'), 0)
      .option('--stop <text...>', 'end a sample where its text contains one of these (the text stops before it)')
      .option('--batch-size <n>', 'samples decoded together (default: what fits 1 GiB of KV cache, at most 256)', (v) => parsePositiveInt(v, '--batch-size'))
      .option('--json', 'no progress; print the summary as JSON')
      .option('--report <file.html>', 'also write the summary as a self-contained HTML report with charts'),
  ).action(async (o: GenerateFlags) => {
    const groups = await promptGroups(o);
    const prompts = groups.flatMap((g) => g.prompts);
    checkWritable(o.out, '--out');
    if (o.report) checkWritable(o.report, '--report');
    const settings: GenerateSettings = {
      model: specOf(o.model),
      adapter: o.adapter === undefined ? null : resolve(o.adapter),
      temperature: o.temperature,
      top_p: o.topP,
      top_k: o.topK,
      max_tokens: o.maxTokens,
      stop: o.stop ?? [],
    };
    const dataset = Dataset.open(o.out, settings, prompts);
    const say = (line: string) => {
      if (!o.json) process.stderr.write(`${line}\n`);
    };
    if (dataset.cutBytes > 0) say(`${o.out}: cut off a partial last line (${dataset.cutBytes} bytes) left by an interrupted run`);
    const todo = prompts.map((p) => ({ prompt: p, indices: dataset.missing(p.id, o.samples) }));
    const have = prompts.length * o.samples - todo.reduce((s, t) => s + t.indices.length, 0);
    if (have > 0) say(`${o.out} already holds ${have} of the ${prompts.length * o.samples} samples; continuing`);

    const abort = new AbortController();
    const onSigint = () => abort.abort(new InvalidArgumentError('interrupted'));
    process.once('SIGINT', onSigint);
    let model;
    let adapter: Adapter | undefined;
    let device = '';
    try {
      model = await loadCliModel(o, Boolean(o.json));
      device = model.device;
      if (o.adapter) adapter = await model.loadAdapter(o.adapter);
      const progress = new Progress(o.json ? { mode: 'silent' } : {});
      for (const { prompt, indices } of todo) {
        if (indices.length === 0) continue;
        const bar = progress.task(`generating ${prompt.id}`, { total: indices.length, unit: 'samples' });
        const started = performance.now();
        let tokens = 0;
        const samples = model.generate(prompt.request.request, {
          n: o.samples,
          indices,
          temperature: o.temperature,
          topK: o.topK,
          topP: o.topP,
          maxTokens: o.maxTokens,
          seed: o.seed,
          stop: o.stop,
          adapter,
          batchSize: o.batchSize,
          signal: abort.signal,
          onProgress: (finished, generated) => {
            tokens = generated;
            bar.detail(`${(tokens / ((performance.now() - started) / 1000)).toFixed(1)} tokens/s`);
            bar.update(finished);
          },
        });
        for await (const s of samples) dataset.append(prompt, [s]);
        const seconds = (performance.now() - started) / 1000;
        bar.done(`${(tokens / seconds).toFixed(1)} tokens/s`);
      }
    } catch (error) {
      if (abort.signal.aborted) {
        dataset.close();
        const written = prompts.reduce((s, p) => s + dataset.lines.get(p.id)!.size, 0);
        process.stderr.write(`\ndiffuse: interrupted; ${o.out} holds ${written} whole sample lines. Rerun the same command to continue.\n`);
        process.exitCode = 130;
        return;
      }
      dataset.close();
      throw error;
    } finally {
      process.removeListener('SIGINT', onSigint);
      adapter?.dispose();
      model?.dispose();
    }
    dataset.close();

    const summary = summarize(dataset, groups, {
      model: settings.model,
      device,
      adapter: adapter !== undefined,
      n: o.samples,
      seed: o.seed,
      temperature: o.temperature,
      topK: o.topK,
      topP: o.topP,
      maxTokens: o.maxTokens,
    });
    if (o.json) process.stdout.write(`${JSON.stringify({ out: resolve(o.out), ...summary }, null, 2)}\n`);
    else {
      const out = (line: string) => process.stdout.write(`${line}\n`);
      out(`${resolve(o.out)}: ${o.samples} samples of each of ${prompts.length} prompt${prompts.length > 1 ? 's' : ''}`);
      for (const task of summary.tasks) printTask([task], [o.adapter ? 'tuned' : 'base'], out);
    }
    if (o.report) {
      await writeFile(o.report, renderReport([{ label: o.adapter ? 'tuned' : 'base', evaluation: summary }], { title: `diffuse generate: ${o.out}` }));
      say(`wrote ${resolve(o.report)}`);
    }
  });
}
