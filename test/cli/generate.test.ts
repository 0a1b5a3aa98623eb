/**
 * diffuse generate through the CLI on a tiny chat model: the lines, appending and resuming
 * (after a rerun, a cut partial line, and a SIGKILLed process), refusing another run's file,
 * the summary equal to eval's figures for the same seed, and bad input refused early.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, stat, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { SampleLine } from '../../lib/generate/dataset.js';
import { runCli } from './run.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';

let dir: string;
let modelPath: string;
let taskFile: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-generate-cli-'));
  modelPath = await writeTinyChatModel(9);
  taskFile = join(dir, 'digits.json');
  await writeFile(taskFile, JSON.stringify({ request: 'Pick a digit from 1 to 4, like {n}.', targets: ['{1}', '{2}', '{3}', '{4}'] }));
});

const lines = async (file: string) =>
  (await readFile(file, 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as SampleLine);
const byIndex = (ls: SampleLine[]) => ls.slice().sort((a, b) => a.index - b.index);

describe('diffuse generate', () => {
  const base = () => ['generate', '--model', modelPath, '--task', taskFile, '--max-tokens', '5', '--seed', '3', '--batch-size', '4'];

  it('writes one line per sample, continues to a larger N, and its summary is eval’s', async () => {
    const out = join(dir, 'a.jsonl');
    const first = await runCli([...base(), '-n', '6', '--out', out, '--json']);
    expect(first.code).toBe(0);
    expect(first.stderr).toBe('');
    const l6 = await lines(out);
    expect(l6).toHaveLength(6);
    expect(l6[0]).toMatchObject({ prompt_id: 'digits', prompt: 'Pick a digit from 1 to 4, like {n}.', seed: 3, settings: { max_tokens: 5, top_k: 0 } });
    for (const l of l6) {
      expect(typeof l.text).toBe('string');
      expect(l.tokens).toBeGreaterThan(0);
      expect(typeof l.valid).toBe('boolean');
      expect(Array.isArray(l.fields)).toBe(true);
    }
    const again = await runCli([...base(), '-n', '10', '--out', out, '--json', '--report', join(dir, 'a.html')]);
    expect(again.code).toBe(0);
    const l10 = byIndex(await lines(out));
    expect(l10.map((l) => l.index)).toEqual([...Array(10).keys()]);
    const fresh = join(dir, 'fresh.jsonl');
    expect((await runCli([...base(), '-n', '10', '--out', fresh, '--json', '--batch-size', '10'])).code).toBe(0);
    expect(byIndex(await lines(fresh)).map((l) => l.text)).toEqual(l10.map((l) => l.text));

    const summary = JSON.parse(again.stdout);
    const evaluation = await runCli(['eval', '--model', modelPath, '--task', taskFile, '--samples', '10', '--max-tokens', '5', '--seed', '3', '--json']);
    const e = JSON.parse(evaluation.stdout);
    expect(summary.tasks[0].sampled).toEqual(e.tasks[0].sampled);
    expect(summary.tasks[0].prompts[0].sampled.answers).toEqual(e.tasks[0].prompts[0].sampled.answers);
    expect(await readFile(join(dir, 'a.html'), 'utf8')).toContain('<svg');
    const table = await runCli([...base(), '-n', '10', '--out', out]);
    expect(table.stdout).toMatch(/coverage/);
    expect(table.stdout).toMatch(/most frequent answers/);
  });

  it('draws a progress bar with samples/s and tokens/s on a terminal, and nothing with --json', async () => {
    const tty = Object.getOwnPropertyDescriptor(process.stderr, 'isTTY');
    const term = process.env.TERM;
    Object.defineProperty(process.stderr, 'isTTY', { value: true, configurable: true });
    process.env.TERM = 'xterm';
    try {
      const shown = await runCli([...base(), '-n', '40', '--batch-size', '2', '--out', join(dir, 'tty.jsonl')]);
      expect(shown.code).toBe(0);
      expect(shown.stderr).toMatch(/\rgenerating digits .*samples/);
      expect(shown.stderr).toMatch(/generating digits: done, 40 samples in .*samples\/s\), [\d.]+ tokens\/s/);
      const quiet = await runCli([...base(), '-n', '40', '--out', join(dir, 'tty-json.jsonl'), '--json']);
      expect(quiet.stderr).toBe('');
    } finally {
      if (term === undefined) delete process.env.TERM;
      else process.env.TERM = term;
      if (tty) Object.defineProperty(process.stderr, 'isTTY', tty);
      else delete (process.stderr as { isTTY?: boolean }).isTTY;
    }
  });

  it('refuses a file written with other arguments and leaves it as it is', async () => {
    const out = join(dir, 'b.jsonl');
    expect((await runCli([...base(), '-n', '3', '--out', out])).code).toBe(0);
    const before = await readFile(out);
    const other = await runCli([...base(), '-n', '3', '--out', out, '--temperature', '0.5']);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/line 1 was written with other settings \(temperature 1, not 0.5\)/);
    const foreign = join(dir, 'foreign.jsonl');
    await writeFile(foreign, '{"hello": 1}\n');
    expect((await runCli([...base(), '-n', '3', '--out', foreign])).stderr).toMatch(/foreign.jsonl line 1 is not a sample line/);
    expect(await readFile(out)).toEqual(before);
  });

  it('cuts a partial last line off and finishes the run', async () => {
    const out = join(dir, 'c.jsonl');
    expect((await runCli([...base(), '-n', '4', '--out', out])).code).toBe(0);
    await appendFile(out, '{"prompt_id": "digits", "te');
    const resumed = await runCli([...base(), '-n', '5', '--out', out]);
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toMatch(/cut off a partial last line/);
    expect(byIndex(await lines(out)).map((l) => l.index)).toEqual([0, 1, 2, 3, 4]);
  });

  it('resumes after SIGKILL with whole lines only and the same samples', async () => {
    const out = join(dir, 'killed.jsonl');
    const run = [...base(), '--max-tokens', '16', '-n', '150', '--out', out, '--json'];
    const args = ['dist/cli/main.js', ...run, '--batch-size', '1'];
    const child = spawn(process.execPath, args, { stdio: 'ignore' });
    for (let i = 0; i < 400; i++) {
      await new Promise((r) => setTimeout(r, 25));
      if ((await stat(out).catch(() => undefined))?.size) break;
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const partial = (await readFile(out, 'utf8')).split('\n').filter(Boolean).length;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(150);
    expect((await runCli(run)).code).toBe(0);
    const done = byIndex(await lines(out));
    expect(done.map((l) => l.index)).toEqual([...Array(150).keys()]);
    const fresh = join(dir, 'unkilled.jsonl');
    expect((await runCli([...base(), '--max-tokens', '16', '-n', '150', '--out', fresh, '--json', '--batch-size', '64'])).code).toBe(0);
    expect(byIndex(await lines(fresh)).map((l) => l.text)).toEqual(done.map((l) => l.text));
  });

  it('names the line of a malformed prompts file and refuses an unwritable output before loading the model', async () => {
    const prompts = join(dir, 'prompts.jsonl');
    await writeFile(prompts, '{"id": "a", "request": "Name a fruit."}\n\n{"id": "b", "request": 3}\n');
    const bad = await runCli(['generate', '--model', modelPath, '--prompts', prompts, '-n', '2', '--out', join(dir, 'p.jsonl')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/prompts.jsonl line 3 has no "request" string/);
    await writeFile(prompts, '{"id": "a", "request": "Name a fruit."}\n{"request": "Name a colour."}\n');
    const good = await runCli(['generate', '--model', modelPath, '--prompts', prompts, '-n', '2', '--max-tokens', '3', '--out', join(dir, 'p.jsonl'), '--json']);
    expect(good.code).toBe(0);
    expect((await lines(join(dir, 'p.jsonl'))).map((l) => l.prompt_id).sort()).toEqual(['2', '2', 'a', 'a']);

    const locked = join(dir, 'locked');
    await mkdir(locked);
    await chmod(locked, 0o500);
    const missingModel = join(dir, 'no-such-model.gguf');
    const refused = await runCli(['generate', '--model', missingModel, '--request', 'hi', '-n', '1', '--out', join(dir, 'nowhere', 'x.jsonl')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/--out .*x.jsonl cannot be created/);
    expect(refused.stderr).not.toMatch(/no-such-model/);
    if (process.getuid?.() !== 0) expect((await runCli(['generate', '--model', missingModel, '--request', 'hi', '-n', '1', '--out', join(locked, 'x.jsonl')])).stderr).toMatch(/cannot be created/);
  });
});
