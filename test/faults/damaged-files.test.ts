/**
 * Fault injection: damaged adapters and checkpoints — truncated, garbled, or made for another
 * model — loaded by the library and resumed by the CLI. Each is a typed error naming the file
 * (and the field or tensor), and nothing on disk changes: not the damaged files, not the
 * adapter a run saved before.
 */
import { cp, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { saveAdapter } from '../../lib/adapters/peft.js';
import type { Model } from '../../lib/model/model.js';
import { train } from '../../lib/train/train.js';
import { runCli } from '../cli/run.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';
import { samplePrompts, tinyTrainingModel } from '../train/tiny-training.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-damaged-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function snapshot(root: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true }))
    if (entry.isFile()) out.set(join(entry.parentPath, entry.name), await readFile(join(entry.parentPath, entry.name)));
  return out;
}

/** A copy of `source` with one change made to it. */
async function damaged(source: string, name: string, change: (dir: string) => Promise<void>): Promise<string> {
  const out = join(dir, name);
  await cp(source, out, { recursive: true });
  await change(out);
  return out;
}

const garble = async (path: string, at: number, bytes: string) => {
  const data = await readFile(path);
  Buffer.from(bytes).copy(data, at);
  await writeFile(path, data);
};

describe('damaged adapters', () => {
  let model: Model;
  let other: Model;
  let good: string;
  beforeAll(async () => {
    ({ model } = await tinyTrainingModel({ seed: 21 }));
    ({ model: other } = await tinyTrainingModel({ seed: 22, hidden: 48, heads: 4 }));
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, seed: 1 });
    good = join(dir, 'good-adapter');
    await saveAdapter(adapter, good);
    adapter.dispose();
  });
  afterAll(() => {
    model.dispose();
    other.dispose();
  });

  it.each([
    ['truncated weights', async (d: string) => truncate(join(d, 'adapter_model.safetensors'), 300), /adapter_model\.safetensors.*(truncated|past the end|fewer than)/],
    ['a garbled weights header', async (d: string) => garble(join(d, 'adapter_model.safetensors'), 12, '\u0000\u0001garbage!'), /adapter_model\.safetensors.*not valid JSON/],
    ['a garbled config', async (d: string) => garble(join(d, 'adapter_config.json'), 0, '{{{'), /adapter_config\.json/],
    ['an empty config', async (d: string) => writeFile(join(d, 'adapter_config.json'), ''), /adapter_config\.json/],
    ['a rank the weights do not have', async (d: string) => writeFile(join(d, 'adapter_config.json'), (await readFile(join(d, 'adapter_config.json'), 'utf8')).replace('"r": 2', '"r": 3')), /has shape \[2, \d+\], but r = 3 .* needs \[3, \d+\]/],
  ])('%s: a FORMAT error naming the file, the files as they were', async (name, change, message) => {
    const path = await damaged(good, name.replace(/ /g, '-'), change);
    const before = await snapshot(path);
    const error = await model.loadAdapter(path).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'FORMAT' });
    expect((error as Error).message).toMatch(message);
    expect(await snapshot(path)).toEqual(before);
  });

  it("another model's adapter: names the tensor, its shape and the shape this model needs", async () => {
    await expect(other.loadAdapter(good)).rejects.toMatchObject({
      code: 'FORMAT',
      message: expect.stringMatching(/adapter_model\.safetensors: tensor 'base_model\.model\.model\.layers\.0\.[^']*': has shape \[32, 2\], but r = 2 .* on tiny needs \[48, 2\]; the adapter was trained for another model/),
    });
  });
});

describe('damaged checkpoints', () => {
  let model: Model;
  let run: string;
  const prompts = () => samplePrompts(model.config.vocabSize);
  const options = (checkpointDir: string) => ({ nIters: 2, lr: 1e-2, checkpointDir, resume: true as const });
  beforeAll(async () => {
    ({ model } = await tinyTrainingModel({ seed: 23 }));
    run = join(dir, 'run');
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, seed: 2 });
    await train(model, adapter, prompts(), { nIters: 1, lr: 1e-2, checkpointDir: join(run, 'checkpoints') });
    adapter.dispose();
  });
  afterAll(() => model.dispose());

  const step = async (root: string) => join(root, 'checkpoints', (await readFile(join(root, 'checkpoints', 'latest'), 'utf8')).trim());

  it.each([
    ['truncated moments', async (d: string) => truncate(join(await step(d), 'optimizer.safetensors'), 100), /optimizer\.safetensors.*(truncated|past the end|fewer than)/, 'FORMAT'],
    ['truncated weights', async (d: string) => truncate(join(await step(d), 'adapter_model.safetensors'), 64), /adapter_model\.safetensors/, 'FORMAT'],
    ['garbled trainer state', async (d: string) => garble(join(await step(d), 'trainer_state.json'), 0, 'x'), /trainer_state\.json: cannot be read as JSON/, 'FORMAT'],
    ['a trainer state missing its fields', async (d: string) => writeFile(join(await step(d), 'trainer_state.json'), '{"format":"diffuse-checkpoint","version":1}'), /trainer_state\.json: state: /, 'FORMAT'],
    ['latest naming garbage', async (d: string) => writeFile(join(d, 'checkpoints', 'latest'), '../../etc\n'), /latest: names "\.\.\/\.\.\/etc", not a step directory/, 'FORMAT'],
    ['latest naming a step that is gone', async (d: string) => rm(await step(d), { recursive: true }), /trainer_state\.json/, 'FORMAT'],
  ])('%s: a typed error naming the file; nothing written', async (name, change, message, code) => {
    const path = await damaged(run, `ckpt-${name.replace(/ /g, '-')}`, change);
    const before = await snapshot(path);
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, seed: 2 });
    const error = await train(model, adapter, prompts(), options(join(path, 'checkpoints'))).catch((e: unknown) => e);
    expect(error).toMatchObject({ code });
    expect((error as Error).message).toMatch(message);
    expect(await snapshot(path)).toEqual(before);
    adapter.dispose();
  });

  it("another model's checkpoint (same prompts and settings, other shapes): a FORMAT error naming the tensor; nothing written", async () => {
    const { model: wider } = await tinyTrainingModel({ seed: 25, hidden: 48, heads: 4 });
    const before = await snapshot(run);
    const adapter = await wider.createAdapter({ rank: 2, alpha: 4, seed: 2 });
    const error = await train(wider, adapter, samplePrompts(model.config.vocabSize), options(join(run, 'checkpoints'))).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'FORMAT', message: expect.stringMatching(/adapter_model\.safetensors: tensor 'base_model\.model\.model\.layers\.0\.[^']+': is F32 \[\d+, \d+\]; the adapter needs F32 \[\d+, \d+\]/) });
    expect(await snapshot(run)).toEqual(before);
    adapter.dispose();
    wider.dispose();
  });

  it('resumed by the CLI: exit 1 naming the file, the adapter saved in OUT untouched', async () => {
    const tiny = await writeTinyChatModel(24);
    const out = join(dir, 'cli-out');
    const trainArgs = ['train', '--model', tiny, '--task', 'rng:1-4', '--out', out, '--iters', '1', '--rank', '2'];
    expect((await runCli(trainArgs)).code).toBe(0);
    const latest = join(out, 'checkpoints', (await readFile(join(out, 'checkpoints', 'latest'), 'utf8')).trim());
    await truncate(join(latest, 'optimizer.safetensors'), 50);
    const before = await snapshot(out);
    const resumed = await runCli([...trainArgs.slice(0, -4), '--iters', '2', '--rank', '2', '--resume']);
    expect(resumed.code).toBe(1);
    expect(resumed.stderr).toContain(join(latest, 'optimizer.safetensors'));
    expect(resumed.stderr).not.toContain('internal error');
    expect(await snapshot(out)).toEqual(before);
  });
});
