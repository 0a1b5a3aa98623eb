/**
 * The biography results of tools/reproduction/biographies.sh as markdown in the shape of the
 * paper's Tables 7–8: per field, coverage / entropy of the sampled values for Base, Tuned-ID and
 * Tuned-OOD, then the most frequent values of each model.
 *
 *   npx tsx tools/reproduction/biographies-table.ts OUT
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { Evaluation, TaskSampled } from '../../lib/eval/evaluate.js';
import { biographyFields } from '../../lib/eval/metrics.js';

const out = process.argv[2];
if (!out) {
  process.stderr.write('usage: npx tsx tools/reproduction/biographies-table.ts OUT (the directory biographies.sh wrote)\n');
  process.exit(2);
}

function read<T>(file: string): T {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch (error) {
    process.stderr.write(`cannot read ${file}: ${(error as Error).message}; run tools/reproduction/biographies.sh first\n`);
    process.exit(1);
  }
}

const baseOod = read<{ base: Evaluation; tuned: Evaluation }>(join(out, 'base-ood.json'));
const id = read<Evaluation>(join(out, 'id.json'));
const runs: [string, Evaluation][] = [
  ['Base', baseOod.base],
  ['Tuned-ID', id],
  ['Tuned-OOD', baseOod.tuned],
];
const sampled = (e: Evaluation): TaskSampled => {
  const s = e.tasks[0].sampled;
  if (!s?.fields) {
    process.stderr.write(`${out}: an evaluation without biography fields; was it made with --samples on the biography prompt?\n`);
    process.exit(1);
  }
  return s;
};
const table = (header: string[], body: string[][]) =>
  [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');

const settings = runs[0][1].settings;
const lines: string[] = [];
lines.push(`${settings.samples} biographies per model at temperature ${settings.temperature}, at most ${settings.maxTokens} tokens, seed ${settings.seed}.`, '');
lines.push('**Coverage / entropy (nats) per field** (the paper\'s Table 7):', '');
lines.push(
  table(
    ['field', ...runs.map(([label]) => label)],
    biographyFields.map((field) => [
      field,
      ...runs.map(([, e]) => {
        const f = sampled(e).fields!.find((x) => x.field === field)!;
        return `${f.coverage} / ${f.entropy.toFixed(2)}`;
      }),
    ]),
  ),
  '',
);
lines.push(
  table(
    ['', ...runs.map(([label]) => label)],
    [
      ['biographies with all six fields', ...runs.map(([, e]) => `${((e.tasks[0].prompts[0].sampled?.completeBiographies ?? 0) * 100).toFixed(1)}%`)],
      ['fields found (first name)', ...runs.map(([, e]) => String(sampled(e).fields!.find((x) => x.field === 'first name')!.present))],
    ],
  ),
  '',
);
lines.push('**Most frequent values** (count of samples; the paper\'s Table 8):', '');
lines.push(
  table(
    ['field', ...runs.map(([label]) => label)],
    biographyFields.map((field) => [
      field,
      ...runs.map(([, e]) =>
        sampled(e)
          .fields!.find((x) => x.field === field)!
          .top.slice(0, 3)
          .map((v) => `${v.value.replace(/\|/g, '\\|')} (${v.count})`)
          .join(', '),
      ),
    ]),
  ),
);
process.stdout.write(`${lines.join('\n')}\n`);
