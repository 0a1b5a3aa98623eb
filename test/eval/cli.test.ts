/**
 * diffuse eval through the CLI, in-process: on a tiny model with a saved adapter (JSON, the
 * table, the report, --compare-base), and one short run of the real default model whose exact
 * figures must equal diffuse logprobs'.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { saveAdapter } from '../../lib/adapters/peft.js';
import { loadModel } from '../../lib/model/load.js';
import { runCli } from '../cli/run.js';
import { writeTinyChatModel } from './tiny-chat-model.js';

let dir: string;
let modelPath: string;
let adapterDir: string;
let taskFile: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-eval-cli-'));
  modelPath = await writeTinyChatModel(7);
  const model = await loadModel(modelPath, { device: 'cpu' });
  const adapter = await model.createAdapter({ rank: 2, seed: 3 });
  for (const t of adapter.tensors())
    if (t.name.endsWith('lora_B')) await adapter.setTensor(t.name, Float32Array.from({ length: t.shape[0] * t.shape[1] }, (_, i) => Math.sin(3 * i)));
  adapterDir = join(dir, 'adapter');
  await saveAdapter(adapter, adapterDir);
  adapter.dispose();
  model.dispose();
  taskFile = join(dir, 'digits.json');
  await writeFile(taskFile, JSON.stringify({ request: 'Pick a digit from 1 to 4, like {n}.', targets: ['{1}', '{2}', '{3}', '{4}'] }));
});

describe('diffuse eval on a tiny model', () => {
  it('prints base and tuned side by side as JSON, with samples, and writes the report', async () => {
    const report = join(dir, 'report.html');
    const args = ['eval', '--model', modelPath, '--task', taskFile, '--samples', '6', '--max-tokens', '4', '--seed', '2'];
    const { code, stdout, stderr } = await runCli([...args, '--adapter', adapterDir, '--compare-base', '--json', '--report', report]);
    expect(stderr).not.toContain('internal error');
    expect(code).toBe(0);
    const out = JSON.parse(stdout);
    expect(Object.keys(out)).toEqual(['base', 'tuned']);
    expect(out.base.adapter).toBeNull();
    expect(out.tuned.adapter).toBe(adapterDir);
    expect(out.tuned.settings).toEqual({ samples: 6, temperature: 1, topK: 0, topP: 1, maxTokens: 4, seed: 2 });
    for (const run of [out.base, out.tuned]) {
      const task = run.tasks[0];
      expect(task.task).toBe('digits');
      expect(task.exact.distribution.map((t: { target: string }) => t.target)).toEqual(['{1}', '{2}', '{3}', '{4}']);
      expect(task.prompts[0].sampled.samples).toHaveLength(6);
    }
    expect(out.tuned.tasks[0].exact.kl).not.toBeCloseTo(out.base.tasks[0].exact.kl, 3);

    // One run alone gives the same numbers as its half of the comparison.
    const alone = JSON.parse((await runCli([...args, '--adapter', adapterDir, '--json'])).stdout);
    delete alone.throughput;
    delete out.tuned.throughput;
    expect(alone).toEqual(out.tuned);

    const html = await readFile(report, 'utf8');
    expect(html).toContain('<span class="run" style="--c:#94a3b8">base</span>');
    expect(html).toContain('<span class="run" style="--c:#2563eb">tuned</span>');
    expect(html).toContain(`with ${adapterDir}`);
  });

  it('prints a table of figures and a bar per target', async () => {
    const { code, stdout } = await runCli(['eval', '--model', modelPath, '--task', taskFile]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/entropy \(exact\) +[0-9.]+ of 1\.39 nats/);
    expect(stdout).toMatch(/KL\(p\*‖model\) +[0-9.]+/);
    for (const label of ['1', '2', '3', '4']) expect(stdout).toMatch(new RegExp(`^  ${label} +[0-9.e+-]+% █*`, 'm'));
    expect(stdout).not.toMatch(/^  coverage /m);
  });

  it('says what is missing: samples for an open prompt, an adapter for --compare-base', async () => {
    const open = join(dir, 'open.json');
    await writeFile(open, JSON.stringify({ request: 'Name a fruit like {fruit}.', targets: [] }));
    const noSamples = await runCli(['eval', '--model', modelPath, '--task', open]);
    expect(noSamples.code).toBe(1);
    expect(noSamples.stderr).toContain('--samples');
    const noAdapter = await runCli(['eval', '--model', modelPath, '--task', taskFile, '--compare-base']);
    expect(noAdapter.code).toBe(1);
    expect(noAdapter.stderr).toContain('--adapter');
    const badTopP = await runCli(['eval', '--model', modelPath, '--task', taskFile, '--samples', '2', '--top-p', '0']);
    expect(badTopP.code).toBe(1);
    expect(badTopP.stderr).toContain('topP');
  });
});

describe('diffuse eval on the default model', () => {
  it('samples answers and gives the exact figures diffuse logprobs gives', async () => {
    const request = ['--request', 'Pick a number from 1 to 3. Answer like {1}.', '--targets', '{1}', '{2}', '{3}'];
    const report = join(dir, 'smollm2.html');
    const evaluated = await runCli(['eval', ...request, '--samples', '4', '--max-tokens', '8', '--json', '--report', report]);
    expect(evaluated.code).toBe(0);
    const out = JSON.parse(evaluated.stdout);
    const logprobs = JSON.parse((await runCli(['logprobs', ...request, '--json'])).stdout).tasks[0];
    const task = out.tasks[0];
    expect(task.exact.kl).toBe(logprobs.kl);
    expect(task.exact.entropy).toBe(logprobs.entropy);
    expect(task.exact.outsideMass).toBe(logprobs.outsideMass);
    const sampled = task.prompts[0].sampled;
    expect(sampled.samples).toHaveLength(4);
    expect(sampled.finishReasons.stop + sampled.finishReasons.length).toBe(4);
    for (const s of sampled.samples) {
      expect(typeof s.text).toBe('string');
      expect(s.tokens).toBeLessThanOrEqual(8);
    }
    expect(out.throughput.tokensPerSecond).toBeGreaterThan(0);
    expect(existsSync(report)).toBe(true);
  });
});
