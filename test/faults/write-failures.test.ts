/**
 * Fault injection: real write failures. A small tmpfs is mounted for the test (we run as root
 * in CI and on the dev machines; elsewhere the suite skips, saying why), filled to the last
 * block, and later remounted read-only. Adapters, checkpoints, the JSONL log and the HTML
 * report are written onto it: every failure is an IO error naming the path, files already
 * there are byte for byte as they were, and no half-written file sits under a final name.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { saveAdapter } from '../../lib/adapters/peft.js';
import type { Model } from '../../lib/model/model.js';
import { readCheckpoint } from '../../lib/train/checkpoint.js';
import { train } from '../../lib/train/train.js';
import { runCli } from '../cli/run.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';
import { samplePrompts, tinyTrainingModel } from '../train/tiny-training.js';

function mountProbe(): string | undefined {
  if (process.platform !== 'linux') return 'tmpfs mounts are Linux only';
  const dir = mkdtempSync(join(tmpdir(), 'diffuse-mount-probe-'));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { encoding: 'utf8' });
  if (mounted.status === 0) spawnSync('umount', [dir]);
  rmdirSync(dir);
  return mounted.status === 0 ? undefined : `cannot mount a tmpfs here (${(mounted.stderr || mounted.error?.message || '').trim()}); run as root`;
}
const cannotMount = mountProbe();

const mount = (dir: string, options: string) => {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount ${dir}: ${r.stderr}`);
};
const remount = (dir: string, options: string) => {
  const r = spawnSync('mount', ['-o', `remount,${options}`, dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`remount ${dir}: ${r.stderr}`);
};

/** Writes a filler file until the file system has no block left. */
async function fill(dir: string): Promise<void> {
  const handle = await open(join(dir, `filler-${Math.random().toString(36).slice(2)}`), 'w');
  const chunk = Buffer.alloc(4096, 1);
  try {
    for (;;) await handle.write(chunk);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  } finally {
    await handle.close();
  }
  // Then the odd bytes: a block may be partly free.
  const tail = await open(join(dir, `filler-tail-${Math.random().toString(36).slice(2)}`), 'w');
  try {
    for (;;) await tail.write(Buffer.alloc(1, 1));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  } finally {
    await tail.close();
  }
}

async function snapshot(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }))
    if (entry.isFile()) out.set(join(entry.parentPath, entry.name), await readFile(join(entry.parentPath, entry.name)));
  return out;
}

const temporaries = async (dir: string) => (await readdir(dir, { recursive: true })).filter((f) => /(^|\/)\.[^/]*tmp-/.test(String(f)));

(cannotMount ? describe.skip : describe)(`writes onto a full disk and a read-only directory${cannotMount ? ` (skipped: ${cannotMount})` : ''}`, () => {
  let root: string;
  let disk: string;
  let model: Model;
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'diffuse-writes-'));
    disk = join(root, 'disk');
    await mkdir(disk);
    mount(disk, 'size=512k');
    ({ model } = await tinyTrainingModel({ seed: 8 }));
  });
  afterAll(async () => {
    model?.dispose();
    if (disk) spawnSync('umount', [disk]);
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('full disk: an adapter save fails naming the file, the adapter already there untouched, no temporary left', async () => {
    const first = await model.createAdapter({ rank: 2, alpha: 4, seed: 1 });
    const dir = join(disk, 'adapter');
    await saveAdapter(first, dir);
    const before = await snapshot(dir);
    await fill(disk);
    const second = await model.createAdapter({ rank: 3, alpha: 4, seed: 2 });
    const error = await saveAdapter(second, dir).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'IO', message: expect.stringMatching(new RegExp(`cannot write ${dir}/adapter_model\\.safetensors \\(ENOSPC`)) });
    expect(await snapshot(dir)).toEqual(before);
    expect(await temporaries(dir)).toEqual([]);
    first.dispose();
    second.dispose();
  });

  it('full disk: a checkpoint that does not fit fails naming the directory; latest still names the last whole one; the log keeps whole lines', async () => {
    await rm(join(disk, 'adapter'), { recursive: true });
    for (const f of await readdir(disk)) if (f.startsWith('filler')) await rm(join(disk, f));
    const prompts = samplePrompts(model.config.vocabSize);
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, seed: 3 });
    const checkpoints = join(disk, 'checkpoints');
    const log = join(disk, 'train.jsonl');
    const error = await train(model, adapter, prompts, {
      nIters: 3,
      lr: 1e-2,
      checkpointDir: checkpoints,
      checkpointEvery: 1,
      keepCheckpoints: 5,
      logFile: log,
      onStep: async (r) => {
        if (r.step === 2) await fill(disk);
      },
    }).catch((e: unknown) => e);
    // Step 2's log line was appended before the disk filled; its checkpoint is the first save that fails.
    expect(error).toMatchObject({ code: 'IO' });
    expect((error as Error).message).toContain(`cannot save the checkpoint of step 2 in ${checkpoints} (cannot write `);
    expect((error as Error).message).toContain('ENOSPC');
    expect((error as Error).message).toMatch(/the previous checkpoint is intact$/);
    const latest = await readCheckpoint(checkpoints);
    expect(latest!.trainer.state.step).toBe(1);
    const reloaded = await model.loadAdapter(latest!.dir);
    reloaded.dispose();
    expect(await temporaries(checkpoints)).toEqual([]);
    const lines = (await readFile(log, 'utf8')).split('\n');
    expect(lines.pop()).toBe('');
    for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
    adapter.dispose();
  });

  it('full disk: a log line that does not fit is cut back, leaving the lines before it whole', async () => {
    for (const f of await readdir(disk)) await rm(join(disk, f), { recursive: true });
    // 4000 bytes of earlier lines: the next line straddles the first block's end.
    const log = join(disk, 'run.jsonl');
    const earlier = `${JSON.stringify({ type: 'note', pad: 'x'.repeat(4000 - 25) })}\n`;
    expect(earlier.length).toBe(4000);
    await writeFile(log, earlier);
    const before = await readFile(log);
    await fill(disk);
    const prompts = samplePrompts(model.config.vocabSize);
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, seed: 4 });
    const error = await train(model, adapter, prompts, { nIters: 1, lr: 1e-2, logFile: log }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'IO', message: expect.stringContaining(`cannot write ${log} (ENOSPC`) });
    expect((error as Error).message).toContain('the lines already logged are intact');
    expect((await readFile(log)).equals(before)).toBe(true);
    adapter.dispose();
  });

  it('full disk: diffuse generate fails naming its output, the lines already there intact', async () => {
    for (const f of await readdir(disk)) await rm(join(disk, f), { recursive: true });
    const modelPath = await writeTinyChatModel(5);
    const out = join(disk, 'samples.jsonl');
    const args = (n: number) => ['generate', '--model', modelPath, '--request', 'Say a word, like {w}.', '-n', String(n), '--max-tokens', '6', '--out', out, '--json'];
    expect((await runCli(args(2))).code).toBe(0);
    const before = await readFile(out);
    await fill(disk);
    const full = await runCli(args(40));
    expect(full.code).toBe(1);
    expect(full.stderr).toContain(`cannot append to ${out} (ENOSPC`);
    expect(full.stderr).toContain('the lines already there are intact');
    // Samples that fitted before the disk filled are appended whole; the one that did not is cut back.
    const after = await readFile(out);
    expect(after.subarray(0, before.length).equals(before)).toBe(true);
    expect(after.at(-1)).toBe(0x0a);
    for (const line of after.toString('utf8').trimEnd().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
  });

  it('read-only: adapters, checkpoints, logs, the eval report and diffuse train --out fail naming the path, with what was there intact', async () => {
    for (const f of await readdir(disk)) await rm(join(disk, f), { recursive: true });
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, seed: 5 });
    await saveAdapter(adapter, join(disk, 'adapter'));
    await writeFile(join(disk, 'report.html'), '<!doctype html><p>an earlier report</p>\n');
    await writeFile(join(disk, 'train.jsonl'), '{"type":"step","step":1}\n');
    const before = await snapshot(disk);
    remount(disk, 'ro');
    try {
      await expect(saveAdapter(adapter, join(disk, 'adapter'))).rejects.toMatchObject({ code: 'IO', message: expect.stringMatching(/cannot write .*\/adapter\/adapter_model\.safetensors \(EROFS/) });
      await expect(saveAdapter(adapter, join(disk, 'new-adapter'))).rejects.toMatchObject({ code: 'IO', message: expect.stringMatching(/cannot create the directory .*\/new-adapter \(EROFS/) });
      const prompts = samplePrompts(model.config.vocabSize);
      await expect(train(model, adapter, prompts, { nIters: 1, checkpointDir: join(disk, 'checkpoints') })).rejects.toMatchObject({
        code: 'IO',
        message: expect.stringMatching(/cannot create the directory .*\/checkpoints \(EROFS/),
      });
      await expect(train(model, adapter, prompts, { nIters: 1, logFile: join(disk, 'train.jsonl') })).rejects.toMatchObject({
        code: 'IO',
        message: expect.stringMatching(/cannot write .*\/train\.jsonl \(EROFS/),
      });
      const tiny = await writeTinyChatModel(9);
      const report = join(disk, 'report.html');
      const cli = await runCli(['eval', '--model', tiny, '--request', 'Pick one', '--targets', '{1}', '{2}', '--report', report]);
      expect(cli.code).toBe(1);
      expect(cli.stderr).toContain(`cannot write ${report} (EROFS`);
      expect(cli.stderr).not.toContain('internal error');
      const trained = await runCli(['train', '--model', tiny, '--task', 'rng:1-4', '--out', join(disk, 'train-out'), '--iters', '1', '--rank', '2']);
      expect(trained.code).toBe(1);
      expect(trained.stderr).toContain(`cannot create the directory ${join(disk, 'train-out')} (EROFS`);
    } finally {
      remount(disk, 'rw');
    }
    expect(await snapshot(disk)).toEqual(before);
    adapter.dispose();
  });
});
