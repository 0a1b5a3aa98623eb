/**
 * The leave-one-out results of tools/reproduction/leave-one-out.sh as markdown tables in the
 * shape of the paper's Tables 5 and 6 (mean coverage and entropy of samples, base vs tuned on
 * the other five tasks), plus the exact figures over each target set.
 *
 *   npx tsx tools/reproduction/leave-one-out-table.ts OUT
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { Evaluation, TaskEvaluation } from '../../lib/eval/evaluate.js';

const tasks: [string, string][] = [
  ['baby-names', 'BABYNAMES'],
  ['continent-countries', 'COUNTRIES'],
  ['fruits', 'FRUITS'],
  ['day-date', 'DAYS AND DATES'],
  ['numbers', 'NUMBERS'],
  ['occupations', 'OCCUPATIONS'],
];

interface Row {
  name: string;
  base: TaskEvaluation;
  tuned: TaskEvaluation;
  training: { steps: number; passes: number; seconds: number; lastPass: { loss: number; optimalLoss: number } | null };
}

const out = process.argv[2];
if (!out) {
  process.stderr.write('usage: npx tsx tools/reproduction/leave-one-out-table.ts OUT (the directory leave-one-out.sh wrote)\n');
  process.exit(2);
}

function read<T>(file: string): T {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch (error) {
    process.stderr.write(`cannot read ${file}: ${(error as Error).message}; run tools/reproduction/leave-one-out.sh first\n`);
    process.exit(1);
  }
}

const rows: Row[] = tasks.map(([dir, name]) => {
  const evaluation = read<{ base: Evaluation; tuned: Evaluation }>(join(out, dir, 'eval.json'));
  return { name, base: evaluation.base.tasks[0], tuned: evaluation.tuned.tasks[0], training: read(join(out, dir, 'training.json')) };
});
const settings = read<{ base: Evaluation }>(join(out, tasks[0][0], 'eval.json')).base.settings;

const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
/** The better of base and tuned in bold, as the paper marks it. */
const pair = (base: number, tuned: number, f: (x: number) => string, higherIsBetter = true) => {
  const better = higherIsBetter ? tuned > base : tuned < base;
  const worse = higherIsBetter ? tuned < base : tuned > base;
  return [worse ? `**${f(base)}**` : f(base), better ? `**${f(tuned)}**` : f(tuned)];
};
const table = (header: string[], body: string[][]) =>
  [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');

const n = settings.samples;
const lines: string[] = [];
lines.push(`Samples: ${n} per prompt at temperature ${settings.temperature}, at most ${settings.maxTokens} tokens, seed ${settings.seed}. Figures are means over each task's prompts.`, '');
lines.push(`**Mean Coverage-${n}** (distinct answers in the {…} format among ${n} samples; the paper's Table 5 counts them in 1000):`, '');
lines.push(
  table(
    ['task', 'base', 'tuned (OOD)', 'of which in the target set: base', 'tuned (OOD)'],
    rows.map((r) => [r.name, ...pair(r.base.sampled!.coverage, r.tuned.sampled!.coverage, f1), f1(r.base.sampled!.targetCoverage ?? 0), f1(r.tuned.sampled!.targetCoverage ?? 0)]),
  ),
  '',
);
lines.push(`**Mean entropy of the sampled answers** (nats; the paper's Table 6):`, '');
lines.push(
  table(
    ['task', 'base', 'tuned (OOD)', 'valid answers: base', 'tuned (OOD)'],
    rows.map((r) => [r.name, ...pair(r.base.sampled!.entropy, r.tuned.sampled!.entropy, f2), pct(r.base.sampled!.validRate), pct(r.tuned.sampled!.validRate)]),
  ),
  '',
);
const coverageN = rows[0].base.exact!.expectedCoverage.n;
lines.push(`**Exact, over each target set** (no sampling): entropy of the model's distribution renormalised over the targets (max ln |T|), KL(p* ‖ model), the probability outside the set, and the expected number of distinct targets in ${coverageN} samples:`, '');
lines.push(
  table(
    ['task', 'entropy / max', 'KL', 'outside the set', `E[targets in ${coverageN} samples]`],
    rows.map((r) => {
      const b = r.base.exact!, t = r.tuned.exact!;
      return [
        r.name,
        `${f2(b.entropy / b.optimalEntropy)} → ${f2(t.entropy / t.optimalEntropy)}`,
        `${f2(b.kl)} → ${f2(t.kl)}`,
        `${pct(b.outsideMass)} → ${pct(t.outsideMass)}`,
        `${f1(b.expectedCoverage.value)} → ${f1(t.expectedCoverage.value)}`,
      ];
    }),
  ),
  '',
);
lines.push('**Training** (on the other five tasks):', '');
lines.push(
  table(
    ['held out', 'steps', 'passes', 'seconds', 'last pass loss / optimal'],
    rows.map((r) => [r.name, String(r.training.steps), String(r.training.passes), f1(r.training.seconds), r.training.lastPass ? `${f2(r.training.lastPass.loss)} / ${f2(r.training.lastPass.optimalLoss)}` : '—']),
  ),
);
process.stdout.write(`${lines.join('\n')}\n`);
