/**
 * diffuse train through the CLI, in-process, on a tiny random model with a real tokenizer: from
 * flags and from a config in the paper's format with flags overriding it, the files it writes,
 * and the errors a user can make.
 */
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { readAdapterConfig } from '../../lib/adapters/peft.js';
import { loadModel } from '../../lib/model/load.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';
import { runCli } from './run.js';

let dir: string;
let modelPath: string;
let configPath: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-train-cli-'));
  modelPath = await writeTinyChatModel(11);
  await mkdir(join(dir, 'prompts', 'digits'), { recursive: true });
  const digits = ['{1}', '{2}', '{3}', '{4}'];
  await writeFile(join(dir, 'prompts', 'digits', 'a.json'), JSON.stringify({ request: 'Pick a digit from 1 to 4, like {n}.', targets: digits }));
  await writeFile(join(dir, 'prompts', 'digits', 'b.json'), JSON.stringify({ request: 'A digit from 1 to 4, please, as {n}.', targets: digits }));
  await writeFile(join(dir, 'prompts', 'open.json'), JSON.stringify({ request: 'Write a poem.', targets: [] }));
  await mkdir(join(dir, 'configs'));
  configPath = join(dir, 'configs', 'digits.yaml');
  // The paper's format: the model is one this machine does not have, and paths are relative to the repository root.
  await writeFile(configPath, ['model: meta-llama/Llama-2-13b-chat-hf', 'train_prompts:', '- prompts/digits', 'alg_config:', '  n_iters: 50', 'output_dir: results/digits', ''].join('\n'));
});

const stepsIn = async (log: string) => (await readFile(log, 'utf8')).trim().split('\n').filter((l) => JSON.parse(l).type === 'step').length;

describe('diffuse train', () => {
  it('trains from flags and writes the adapter, the log and a summary', async () => {
    const out = join(dir, 'flags');
    const { code, stdout, stderr } = await runCli(['train', '--model', modelPath, '--task', join(dir, 'prompts', 'digits'), '--out', out, '--iters', '3', '--lr', '1e-2', '--rank', '2', '--json']);
    expect(stderr).not.toContain('internal error');
    expect(code).toBe(0);
    const result = JSON.parse(stdout);
    expect(result).toMatchObject({ stopped: 'completed', steps: 6, passes: 3 });
    expect(result.records).toHaveLength(6);
    expect(result.records[5].loss).toBeLessThan(result.records[0].loss);
    expect(await stepsIn(join(out, 'train-log.jsonl'))).toBe(6);
    const summary = JSON.parse(await readFile(join(out, 'training.json'), 'utf8'));
    expect(summary.options).toMatchObject({ nIters: 3, lr: 1e-2 });
    expect((await readAdapterConfig(out)).rank).toBe(2);

    // The adapter loads back and changes the model's distribution.
    const model = await loadModel(modelPath, { device: 'cpu' });
    const adapter = await model.loadAdapter(out);
    const request = { request: 'Pick a digit from 1 to 4, like {n}.', targets: ['{1}', '{2}', '{3}', '{4}'] };
    const [base, tuned] = [await model.targetLogProbs(request), await model.targetLogProbs(request, { adapter })];
    expect(tuned.kl).toBeLessThan(base.kl);
    adapter.dispose();
    model.dispose();
  });

  it('takes a config in the paper\'s format, with flags overriding its model, passes, learning rate and output directory', async () => {
    const out = join(dir, 'from-config');
    const { code, stdout, stderr } = await runCli(['train', configPath, '--model', modelPath, '--out', out, '--iters', '2', '--lr', '3e-3', '--json']);
    expect(stderr).not.toContain('internal error');
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toMatchObject({ model: modelPath, steps: 4, passes: 2 });
    const summary = JSON.parse(await readFile(join(out, 'training.json'), 'utf8'));
    expect(summary.options).toMatchObject({ nIters: 2, lr: 3e-3 });
    expect(summary.options.baseModel).toBeUndefined();
    expect((await readAdapterConfig(out)).baseModel).toBe(modelPath);
  });

  it('takes --out for a config without output_dir, and names both when neither is given', async () => {
    const noOutput = join(dir, 'configs', 'no-output.yaml');
    await writeFile(noOutput, ['model: meta-llama/Llama-2-13b-chat-hf', 'train_prompts:', '- prompts/digits', ''].join('\n'));
    const out = join(dir, 'no-output-dir');
    const { code, stdout, stderr } = await runCli(['train', noOutput, '--model', modelPath, '--out', out, '--iters', '1', '--json']);
    expect(stderr).not.toContain('output_dir');
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toMatchObject({ steps: 2, passes: 1 });
    expect((await readAdapterConfig(out)).rank).toBe(4);
    const neither = await runCli(['train', noOutput, '--model', modelPath, '--iters', '1']);
    expect(neither.code).toBe(1);
    expect(neither.stderr).toContain(`${noOutput}: output_dir: missing; say which directory the adapter and results go to (or give --out DIR)`);
  });

  it('says when the config\'s model is not available, and how to swap it', async () => {
    // A hub that refuses connections stands for a machine without network access.
    const endpoint = process.env.HF_ENDPOINT;
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9';
    const { code, stderr } = await runCli(['train', configPath, '--out', join(dir, 'unavailable'), '--iters', '1']);
    if (endpoint === undefined) delete process.env.HF_ENDPOINT;
    else process.env.HF_ENDPOINT = endpoint;
    expect(code).toBe(1);
    expect(stderr).toContain('meta-llama/Llama-2-13b-chat-hf');
    expect(stderr).toContain('--model');
  });

  it('names what is missing or contradictory', async () => {
    const noOut = await runCli(['train', '--model', modelPath, '--task', join(dir, 'prompts', 'digits')]);
    expect(noOut.code).toBe(1);
    expect(noOut.stderr).toContain('--out DIR is needed');
    const both = await runCli(['train', configPath, '--task', 'rng:1-10']);
    expect(both.code).toBe(1);
    expect(both.stderr).toContain('either a config file or --task');
    const open = await runCli(['train', '--model', modelPath, '--task', join(dir, 'prompts', 'open.json'), '--out', join(dir, 'open')]);
    expect(open.code).toBe(1);
    expect(open.stderr).toContain('no targets');
    const gemBeta = await runCli(['train', '--model', modelPath, '--task', 'rng:1-10', '--out', join(dir, 'gem'), '--gem-beta', '0.5']);
    expect(gemBeta.code).toBe(1);
    expect(gemBeta.stderr).toContain('--objective gem');
  });
});
