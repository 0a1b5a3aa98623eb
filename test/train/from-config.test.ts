/** Training configs (the reference's YAML and our keys) as createAdapter and train options. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { packageRoot } from '../../lib/native.js';
import { loadTrainConfig } from '../../lib/tasks/config.js';
import { adapterOptionsFromConfig, trainOptionsFromConfig } from '../../lib/train/from-config.js';
import { resolveTrainOptions } from '../../lib/train/train.js';

const reference = join(packageRoot, 'data', 'tasks', 'reference', 'configs', 'rng', 'rand(1,10)', 'llama-2-13b-chat.yaml');

describe('training configs', () => {
  it('give the reference’s loop for the reference’s own config', async () => {
    const config = await loadTrainConfig(reference, { cwd: packageRoot, warn: () => undefined });
    const options = resolveTrainOptions(trainOptionsFromConfig(config));
    expect(options).toEqual({
      nIters: 50,
      lr: 5e-5,
      beta1: 0.9,
      beta2: 0.999,
      eps: 1e-5,
      weightDecay: 0.01,
      maxGradNorm: 1,
      warmupSteps: 0,
      schedule: 'constant',
      promptsPerStep: 1,
      seed: 0,
      earlyStop: false,
      gamma: 0.2,
      objective: { kind: 'ce' },
    });
    expect(adapterOptionsFromConfig(config)).toEqual({ rank: 4, alpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed: 0 });
  });

  it('carry our keys through, and refuse a step per target batch', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'diffuse-config-'));
    const yaml = (extra: string) =>
      `model: m.gguf\ntrain_prompts: [rng:1-10]\noutput_dir: out\nlr: 0.001\nseed: 9\nwarmup_steps: 5\nschedule: cosine\nobjective: gem\ngem: {beta: 0.5, h: logsigmoid}\nlora: {rank: 8, alpha: 16, target_modules: [q_proj, v_proj]}\nalg_config: {n_iters: 3}\n${extra}`;
    await writeFile(join(dir, 'a.yaml'), yaml(''));
    const config = await loadTrainConfig(join(dir, 'a.yaml'), { cwd: dir });
    expect(trainOptionsFromConfig(config)).toEqual({
      nIters: 3,
      earlyStop: false,
      gamma: 0.2,
      lr: 0.001,
      warmupSteps: 5,
      schedule: 'cosine',
      seed: 9,
      promptsPerStep: 1,
      objective: { kind: 'gem', beta: 0.5, h: 'logsigmoid' },
      baseModel: 'm.gguf',
    });
    expect(adapterOptionsFromConfig(config)).toEqual({ rank: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'], seed: 9 });
    await writeFile(join(dir, 'b.yaml'), yaml('prompts_per_step: 4\n'));
    expect(trainOptionsFromConfig(await loadTrainConfig(join(dir, 'b.yaml'), { cwd: dir })).promptsPerStep).toBe(4);
    await rm(dir, { recursive: true });
  });
});
