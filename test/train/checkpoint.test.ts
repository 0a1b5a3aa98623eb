/**
 * Checkpoints and resume: a run stopped at step k and resumed (into an adapter initialised
 * differently) reproduces the uninterrupted run bit for bit — every step's loss, gradient norm
 * and learning rate, the pass sums, the log, and the final parameters and AdamW moments.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Adapter } from '../../lib/model/adapter.js';
import type { Model } from '../../lib/model/model.js';
import type { PreparedPrompt } from '../../lib/targets/target-set.js';
import { readCheckpoint, saveCheckpoint } from '../../lib/train/checkpoint.js';
import { train, type PassRecord, type StepRecord, type TrainOptions } from '../../lib/train/train.js';
import { randomiseB, samplePrompts, tensorsOf, tinyTrainingModel } from './tiny-training.js';

/** What must be identical between runs (timings are not). */
function curve(records: (StepRecord | PassRecord)[]) {
  return records.map((r) => (r.type === 'step' ? [r.step, r.pass, r.prompts, r.loss, r.gradNorm, r.lr, r.objectiveLoss, r.positions] : [r.pass, r.step, r.loss, r.optimalLoss]));
}

async function bits(adapter: Adapter): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const part of ['param', 'm', 'v'] as const)
    for (const [name, values] of await tensorsOf(adapter, part)) out[`${name}:${part}`] = Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));
  return out;
}

describe('checkpoints and resume', () => {
  let model: Model;
  let prompts: PreparedPrompt[];
  let dir: string;
  beforeAll(async () => {
    ({ model } = await tinyTrainingModel({ seed: 5, tied: false }));
    prompts = samplePrompts(model.config.vocabSize);
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diffuse-ckpt-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  afterAll(() => model.dispose());

  async function freshAdapter(seed = 1): Promise<Adapter> {
    const adapter = await model.createAdapter({ rank: 2, alpha: 5, seed });
    await randomiseB(adapter, seed + 1);
    return adapter;
  }

  const settings: TrainOptions = { nIters: 4, lr: 1e-2, warmupSteps: 1, schedule: 'cosine', promptsPerStep: 2, seed: 11, earlyStop: true, gamma: 0 };

  it.each([
    { stopAt: 3, note: 'mid-pass' },
    { stopAt: 4, note: 'at a pass end' },
  ])('continues to the same loss curve as an uninterrupted run (stopped $note)', async ({ stopAt }) => {
    const full: (StepRecord | PassRecord)[] = [];
    const a = await freshAdapter();
    const fullResult = await train(model, a, prompts, { ...settings, logFile: join(dir, 'full.jsonl'), onStep: (r) => void full.push(r), onPass: (r) => void full.push(r) });
    expect(fullResult).toMatchObject({ stopped: 'completed', steps: 8, passes: 4 });

    const first: (StepRecord | PassRecord)[] = [];
    const controller = new AbortController();
    const b = await freshAdapter();
    const stopped = await train(model, b, prompts, {
      ...settings,
      checkpointDir: join(dir, 'ckpt'),
      logFile: join(dir, 'split.jsonl'),
      signal: controller.signal,
      onStep: (r) => {
        first.push(r);
        if (r.step === stopAt) controller.abort();
      },
      onPass: (r) => void first.push(r),
    });
    expect(stopped).toMatchObject({ stopped: 'signal', steps: stopAt });
    expect(stopped.checkpoint).toBe(join(dir, 'ckpt', `step-0000000${stopAt}`));
    b.dispose();

    // A differently initialised adapter: everything must come from the checkpoint.
    const second: (StepRecord | PassRecord)[] = [];
    const c = await freshAdapter(7);
    const resumed = await train(model, c, prompts, {
      ...settings,
      checkpointDir: join(dir, 'ckpt'),
      resume: true,
      logFile: join(dir, 'split.jsonl'),
      onStep: (r) => void second.push(r),
      onPass: (r) => void second.push(r),
    });
    expect(resumed).toMatchObject({ stopped: 'completed', steps: 8, passes: 4 });
    expect(curve([...first, ...second])).toEqual(curve(full));
    expect(await bits(c)).toEqual(await bits(a));

    const lines = async (file: string) => (await readFile(join(dir, file), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(curve(await lines('split.jsonl'))).toEqual(curve(await lines('full.jsonl')));
    // Only the newest checkpoint is kept, and `latest` names it.
    expect((await readdir(join(dir, 'ckpt'))).sort()).toEqual(['latest', 'step-00000008']);
    a.dispose();
    c.dispose();
  });

  it('writes a checkpoint that is also a PEFT adapter, with the moments under torch’s names', async () => {
    const adapter = await freshAdapter();
    await train(model, adapter, prompts, { nIters: 1, checkpointDir: join(dir, 'ckpt'), baseModel: 'tiny/base' });
    const found = (await readCheckpoint(join(dir, 'ckpt')))!;
    expect(found.dir).toBe(join(dir, 'ckpt', 'step-00000003'));
    expect((await readdir(found.dir)).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'trainer_state.json']);
    const config = JSON.parse(await readFile(join(found.dir, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 2, lora_alpha: 5, base_model_name_or_path: 'tiny/base' });
    expect(found.trainer.state).toMatchObject({ step: 3, pass: 1, position: 0, passLoss: 0 });
    expect(found.trainer.lastPass).toMatchObject({ pass: 1, step: 3 });
    const optimizer = await readFile(join(found.dir, 'optimizer.safetensors'));
    const header = JSON.parse(optimizer.subarray(8, 8 + Number(optimizer.readBigUInt64LE(0))).toString());
    expect(Object.keys(header)).toContain('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight.exp_avg_sq');
    adapter.dispose();
  });

  it('refuses to resume a run with other settings, prompts or adapter, and to overwrite a run', async () => {
    const adapter = await freshAdapter();
    const ckpt = join(dir, 'ckpt');
    await train(model, adapter, prompts, { ...settings, nIters: 1, checkpointDir: ckpt });
    await expect(train(model, adapter, prompts, { ...settings, checkpointDir: ckpt })).rejects.toThrow(/already holds a training checkpoint; pass resume: true/);
    await expect(train(model, adapter, prompts, { ...settings, nIters: 1, lr: 2e-2, checkpointDir: ckpt, resume: true })).rejects.toThrow(
      /differs from the one that wrote it \(lr: checkpoint 0\.01, now 0\.02\)/,
    );
    await expect(train(model, adapter, prompts.slice(0, 2), { ...settings, nIters: 1, warmupSteps: 0, checkpointDir: ckpt, resume: true })).rejects.toThrow(/trained on 3 prompts/);
    await expect(train(model, adapter, prompts, { ...settings, nIters: 1, objective: { kind: 'gem' }, checkpointDir: ckpt, resume: true })).rejects.toThrow(/objective: checkpoint/);
    const other = await model.createAdapter({ rank: 3, alpha: 5 });
    await expect(train(model, other, prompts, { ...settings, nIters: 1, checkpointDir: ckpt, resume: true })).rejects.toThrow(/adapter: the checkpoint's is r=2/);
    // With a constant schedule, a finished run can be extended.
    const constant = { ...settings, schedule: 'constant' as const, checkpointDir: join(dir, 'constant') };
    await train(model, adapter, prompts, { ...constant, nIters: 1 });
    expect(await train(model, adapter, prompts, { ...constant, nIters: 2, resume: true })).toMatchObject({ stopped: 'completed', steps: 4, passes: 2 });
    other.dispose();
    adapter.dispose();
  });

  it('keeps a run that stopped early stopped when it is resumed', async () => {
    const adapter = await freshAdapter();
    const ckpt = join(dir, 'ckpt');
    const options: TrainOptions = { nIters: 5, earlyStop: true, gamma: 1e9, checkpointDir: ckpt };
    expect(await train(model, adapter, prompts, options)).toMatchObject({ stopped: 'early', steps: 3, passes: 1 });
    const steps: StepRecord[] = [];
    expect(await train(model, adapter, prompts, { ...options, resume: true, onStep: (r) => void steps.push(r) })).toMatchObject({ stopped: 'early', steps: 3, passes: 1 });
    expect(steps).toEqual([]);
    // Without early stopping the same checkpoint trains on.
    expect(await train(model, adapter, prompts, { ...options, earlyStop: false, resume: true })).toMatchObject({ stopped: 'completed', steps: 15, passes: 5 });
    adapter.dispose();
  });

  it('leaves the previous checkpoint intact when a save fails midway', async () => {
    const adapter = await freshAdapter();
    const ckpt = join(dir, 'ckpt');
    await train(model, adapter, prompts, { ...settings, nIters: 1, checkpointDir: ckpt });
    const before = await readCheckpoint(ckpt);
    // The real adapter, whose second-moment reads fail, as a full disk would fail the write.
    const failing = new Proxy(adapter, {
      get(target, key) {
        if (key === 'getTensor')
          return (name: string, part?: string) => (part === 'v' ? Promise.reject(new Error('no space left on device')) : target.getTensor(name, part as 'param'));
        const value = Reflect.get(target, key, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const state = { ...before!.trainer.state, step: 99 };
    await expect(
      saveCheckpoint(ckpt, failing, { state, options: before!.trainer.options, nIters: 1, fingerprint: 'x', promptCount: 3, baseModel: null, keep: 1 }),
    ).rejects.toThrow(/no space left on device/);
    expect(await readdir(ckpt)).toEqual(expect.arrayContaining(['latest', 'step-00000002']));
    expect((await readdir(ckpt)).length).toBe(2);
    expect((await readCheckpoint(ckpt))!.dir).toBe(before!.dir);
    // And it still resumes.
    expect(await train(model, adapter, prompts, { ...settings, nIters: 1, checkpointDir: ckpt, resume: true })).toMatchObject({ stopped: 'completed', steps: 2 });
    adapter.dispose();
  });
});
