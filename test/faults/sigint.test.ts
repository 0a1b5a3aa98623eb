/**
 * Fault injection: real signals. `diffuse train` runs as its own process (the CLI's sources
 * through tsx) and gets SIGINT from the test mid-run: it finishes the step, checkpoints, saves
 * the adapter and exits 130; `--resume` then ends with an adapter byte-identical to an
 * uninterrupted run's. A second SIGINT straight after the first exits at once (130), and what it
 * leaves — checkpoints, adapter, log — is whole, so that run too resumes to the same bytes.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { readSafetensors } from '../../lib/formats/safetensors.js';
import { packageRoot } from '../../lib/native.js';
import { readCheckpoint } from '../../lib/train/checkpoint.js';
import { runCli } from '../cli/run.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';

let dir: string;
let modelPath: string;
let taskDir: string;
const args = (out: string) => ['train', '--model', modelPath, '--task', taskDir, '--out', out, '--iters', '20', '--lr', '1e-2', '--rank', '2', '--seed', '3'];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-sigint-'));
  modelPath = await writeTinyChatModel(12);
  taskDir = join(dir, 'digits');
  await mkdir(taskDir);
  const digits = ['{1}', '{2}', '{3}', '{4}'];
  await writeFile(join(taskDir, 'a.json'), JSON.stringify({ request: 'Pick a digit from 1 to 4, like {n}.', targets: digits }));
  await writeFile(join(taskDir, 'b.json'), JSON.stringify({ request: 'A digit from 1 to 4, please, as {n}.', targets: digits }));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const stepLines = async (log: string) => (existsSync(log) ? (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes('"type":"step"')).length : 0);

/** Starts `diffuse train` as a process, sends `signals` SIGINTs once `afterSteps` steps are logged; resolves to its exit. */
async function interrupted(out: string, signals: number, afterSteps = 2): Promise<{ code: number | null; stderr: string; stepsAtSignal: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(packageRoot, 'lib', 'cli', 'main.ts'), ...args(out)], { cwd: packageRoot, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let stepsAtSignal = 0;
  for (;;) {
    stepsAtSignal = await stepLines(join(out, 'train-log.jsonl'));
    if (stepsAtSignal >= afterSteps || child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  for (let i = 0; i < signals; i++) child.kill('SIGINT');
  return { code: await exited, stderr, stepsAtSignal };
}

describe('diffuse train under SIGINT', () => {
  let reference: Buffer;
  beforeAll(async () => {
    const full = await runCli(args(join(dir, 'uninterrupted')));
    expect(full.code).toBe(0);
    reference = await readFile(join(dir, 'uninterrupted', 'adapter_model.safetensors'));
  });

  it('finishes the step, checkpoints and saves; --resume ends byte-identical to an uninterrupted run', async () => {
    const out = join(dir, 'once');
    const { code, stderr, stepsAtSignal } = await interrupted(out, 1);
    expect(stepsAtSignal).toBeLessThan(40);
    expect(code).toBe(130);
    expect(stderr).toContain('stopping after this step');
    const checkpoint = await readCheckpoint(join(out, 'checkpoints'));
    const steps = await stepLines(join(out, 'train-log.jsonl'));
    expect(checkpoint!.trainer.state.step).toBe(steps);
    expect(steps).toBeLessThan(40);
    // The adapter saved at the stop is the checkpoint's.
    expect((await readFile(join(out, 'adapter_model.safetensors'))).equals(await readFile(join(checkpoint!.dir, 'adapter_model.safetensors')))).toBe(true);

    const resumed = await runCli([...args(out), '--resume']);
    expect(resumed.code).toBe(0);
    expect((await readFile(join(out, 'adapter_model.safetensors'))).equals(reference)).toBe(true);
    expect(await stepLines(join(out, 'train-log.jsonl'))).toBe(40);
  });

  it('quits at once on a second SIGINT, leaving only whole files, and that run resumes to the same bytes', async () => {
    const out = join(dir, 'twice');
    const { code } = await interrupted(out, 2);
    expect(code).toBe(130);
    // Whatever is there is whole: the log's lines, the latest checkpoint, any adapter file.
    const log = (await readFile(join(out, 'train-log.jsonl'), 'utf8')).split('\n');
    expect(log.pop()).toBe('');
    for (const line of log) expect(() => JSON.parse(line)).not.toThrow();
    const checkpoint = await readCheckpoint(join(out, 'checkpoints'), { optional: true });
    if (checkpoint) await readSafetensors(join(checkpoint.dir, 'adapter_model.safetensors'));
    if (existsSync(join(out, 'adapter_model.safetensors'))) await readSafetensors(join(out, 'adapter_model.safetensors'));
    expect((await readdir(out)).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const resumed = await runCli([...args(out), '--resume']);
    expect(resumed.code).toBe(0);
    expect((await readFile(join(out, 'adapter_model.safetensors'))).equals(reference)).toBe(true);
  });
});
