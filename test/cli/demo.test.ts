/**
 * diffuse demo through the CLI, in-process, on a tiny random model with a real tokenizer and
 * chat template: everything it writes, and an output directory that is never clobbered.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DEMO_HELD_OUT_TASKS, DEMO_TRAINED_TASK } from '../../lib/cli/commands/demo.js';
import { readAdapterConfig } from '../../lib/adapters/peft.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';
import { runCli } from './run.js';

let dir: string;
let modelPath: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-demo-'));
  modelPath = await writeTinyChatModel(5);
});

const tiny = () => ['demo', '--model', modelPath, '--iters', '2', '--lr', '1e-2', '--samples', '3', '--max-tokens', '3', '--threads', '2'];

describe('diffuse demo on a tiny model', () => {
  it('measures, trains, measures again and writes the summary, the report and the adapter', async () => {
    const out = join(dir, 'run');
    const { code, stdout, stderr } = await runCli([...tiny(), '--out', out, '--json']);
    expect(stderr).not.toContain('internal error');
    expect(code).toBe(0);
    const summary = JSON.parse(stdout);
    expect(JSON.parse(await readFile(join(out, 'summary.json'), 'utf8'))).toEqual(summary);
    expect(summary.trainedOn).toBe(DEMO_TRAINED_TASK);
    expect(summary.heldOut).toEqual(DEMO_HELD_OUT_TASKS);
    expect(summary.training).toMatchObject({ passes: 2, steps: 10, lr: 1e-2, rank: 4 });
    for (const run of [summary.base, summary.tuned]) {
      expect(run.tasks.map((t: { task: string }) => t.task)).toEqual([DEMO_TRAINED_TASK, ...DEMO_HELD_OUT_TASKS]);
      expect(run.tasks[0].sampled.n).toBe(3);
      for (const t of run.tasks) expect(t.exact.entropy).toBeGreaterThan(0);
    }
    expect(summary.base.adapter).toBe(false);
    expect(summary.tuned.adapter).toBe(true);
    // Training moved the trained task's distribution toward uniform over {1} … {10}.
    expect(summary.tuned.tasks[0].exact.kl).toBeLessThan(summary.base.tasks[0].exact.kl);

    const config = await readAdapterConfig(join(out, 'adapter'));
    expect(config.rank).toBe(4);
    const html = await readFile(join(out, 'report.html'), 'utf8');
    for (const task of [DEMO_TRAINED_TASK, ...DEMO_HELD_OUT_TASKS]) expect(html).toContain(task);
    const log = (await readFile(join(out, 'train-log.jsonl'), 'utf8')).trim().split('\n');
    expect(log.filter((l) => JSON.parse(l).type === 'step')).toHaveLength(10);
  });

  it('prints the before/after table and the trained task side by side', async () => {
    const { code, stdout } = await runCli([...tiny(), '--iters', '1', '--samples', '0', '--out', join(dir, 'table')]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/entropy \/ max/);
    for (const task of DEMO_HELD_OUT_TASKS) expect(stdout).toContain(`${task} (never trained on)`);
    expect(stdout).toContain(`${DEMO_TRAINED_TASK} (trained)`);
    expect(stdout).toMatch(/base\s+tuned/);
    expect(stdout).toContain('report.html');
  });

  it('never replaces earlier results without --force, and never touches a directory of other files', async () => {
    const out = join(dir, 'again');
    expect((await runCli([...tiny(), '--iters', '1', '--samples', '0', '--out', out, '--json'])).code).toBe(0);
    const before = await readFile(join(out, 'summary.json'), 'utf8');

    const refused = await runCli([...tiny(), '--iters', '1', '--samples', '0', '--out', out, '--json']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/already holds a demo's results; add --force/);
    expect(await readFile(join(out, 'summary.json'), 'utf8')).toBe(before);

    // --force replaces them only once the model has loaded: a bad --model leaves them as they were.
    const badModel = await runCli(['demo', '--model', join(dir, 'missing.gguf'), '--out', out, '--force']);
    expect(badModel.code).toBe(1);
    expect(await readFile(join(out, 'summary.json'), 'utf8')).toBe(before);

    const replaced = await runCli([...tiny(), '--iters', '1', '--samples', '0', '--seed', '3', '--out', out, '--json', '--force']);
    expect(replaced.code).toBe(0);
    expect(await readFile(join(out, 'summary.json'), 'utf8')).not.toBe(before);

    const mine = join(dir, 'mine');
    await mkdir(mine);
    await writeFile(join(mine, 'notes.txt'), 'keep me');
    const foreign = await runCli([...tiny(), '--out', mine, '--force']);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toMatch(/holds files the demo did not write \(notes\.txt\)/);
    expect(await readdir(mine)).toEqual(['notes.txt']);
  });

  it('rejects bad numbers before loading anything', async () => {
    const bad = await runCli(['demo', '--lr', '0', '--out', join(dir, 'bad')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--lr must be > 0');
    expect(existsSync(join(dir, 'bad'))).toBe(false);
    const samples = await runCli(['demo', '--samples=-1']);
    expect(samples.code).toBe(1);
    expect(samples.stderr).toContain('--samples must be a whole number');
  });
});
