/**
 * Training configs: every reference YAML config loads with the fields it has and the
 * reference's defaults for the rest; prompt paths are found from the current directory or the
 * config's ancestors; our own keys are read and checked; bad configs give a ConfigError that
 * names the file and the key.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

import { DiffuseError } from '../../lib/errors.js';
import { loadTrainConfig, type TrainConfig } from '../../lib/tasks/config.js';
import { ConfigError, type WarnFn } from '../../lib/tasks/errors.js';
import { loadTasks } from '../../lib/tasks/load.js';

const referenceDir = fileURLToPath(new URL('../../data/tasks/reference/', import.meta.url));

const noWarnings = (message: string) => {
  throw new Error(`unexpected warning: ${message}`);
};

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'diffuse-config-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('the reference configs', () => {
  test('every one loads, from any current directory, with its fields and the reference defaults', async () => {
    const configs = listYaml(join(referenceDir, 'configs')).sort();
    expect(configs.length).toBe(52);
    const cwd = join(scratch, 'elsewhere');
    mkdirSync(cwd, { recursive: true });
    for (const file of configs) {
      const raw = parse(await readFile(file, 'utf8')) as Record<string, any>;
      const config = await loadTrainConfig(file, { cwd, warn: noWarnings });
      expect(config.file).toBe(file);
      expect(config.model).toBe(raw.model);
      expect(config.trainPrompts).toEqual(raw.train_prompts.map((p: string) => join(referenceDir, p)));
      expect(config.testPrompts).toEqual((raw.test_prompts ?? []).map((p: string) => join(referenceDir, p)));
      expect(config.alg).toEqual({
        nIters: raw.alg_config.n_iters,
        earlyStop: raw.alg_config.early_stop ?? false,
        gamma: 0.2,
        batchSize: raw.alg_config.batch_size ?? 32,
      });
      expect(config.loadModel).toBe(raw.load_model ?? false);
      expect(config.ckptDir).toBe(raw.load_model ? resolve(cwd, raw.ckpt_dir) : undefined);
      expect(config.outputDir).toBe(resolve(cwd, raw.output_dir));
      expect(withoutReferenceKeys(config)).toEqual(ourDefaults);
    }
  });

  test('their prompts load as tasks', async () => {
    const config = await loadTrainConfig(join(referenceDir, 'configs/all/gemma-7b-it.yaml'), { cwd: scratch, warn: noWarnings });
    const tasks = await loadTasks(config.trainPrompts, { warn: noWarnings });
    expect(tasks.map((t) => [t.name, t.prompts.length])).toEqual([
      ['baby-names', 1], ['day-date', 6], ['fruits', 2], ['numbers', 8], ['occupations', 3], ['continent-countries', 6],
    ]);
    expect(tasks.every((t) => t.hasTargets)).toBe(true);
    expect(config.testPrompts).toEqual([]);

    const people = await loadTrainConfig(join(referenceDir, 'configs/fictitious-people/llama-2-13b.yaml'), { cwd: scratch, warn: noWarnings });
    const [test] = await loadTasks(people.testPrompts, { warn: noWarnings });
    expect(test.hasTargets).toBe(false);
    expect(people.alg.batchSize).toBe(16);
    expect(people.alg.earlyStop).toBe(true);
  });
});

const ourDefaults = {
  // The reference's LoraConfig: r = 4, PEFT's alpha 8, every projection of a Llama block.
  lora: { rank: 4, alpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
  lr: 5e-5,
  objective: { kind: 'ce' },
  device: 'auto',
  seed: 0,
  warmupSteps: 0,
  schedule: 'constant',
  promptsPerStep: 1,
  generate: true,
  chatTemplateKwargs: {},
};

function withoutReferenceKeys(config: TrainConfig) {
  const { file, model, trainPrompts, testPrompts, alg, loadModel, ckptDir, outputDir, ...ours } = config;
  return ours;
}

function listYaml(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith('.yaml')).map((f) => join(dir, f));
}

describe('prompt paths', () => {
  test('are looked for from the current directory first, then the config directory and its ancestors', async () => {
    const project = join(scratch, 'project');
    mkdirSync(join(project, 'prompts'), { recursive: true });
    mkdirSync(join(project, 'configs', 'deep'), { recursive: true });
    copyFileSync(join(referenceDir, 'prompts/numbers/rng-0.json'), join(project, 'prompts', 'rng-0.json'));
    const file = join(project, 'configs', 'deep', 'c.yaml');
    writeFileSync(file, 'model: m\ntrain_prompts: [prompts/rng-0.json, rng:1-10]\noutput_dir: out\n');

    const fromAncestor = await loadTrainConfig(file, { cwd: scratch, warn: noWarnings });
    expect(fromAncestor.trainPrompts).toEqual([join(project, 'prompts', 'rng-0.json'), 'rng:1-10']);

    const cwd = join(scratch, 'cwd-first');
    mkdirSync(join(cwd, 'prompts'), { recursive: true });
    copyFileSync(join(referenceDir, 'prompts/numbers/rng-1.json'), join(cwd, 'prompts', 'rng-0.json'));
    const fromCwd = await loadTrainConfig(file, { cwd, warn: noWarnings });
    expect(fromCwd.trainPrompts[0]).toBe(join(cwd, 'prompts', 'rng-0.json'));
  });

  test('a missing one names the key and every place looked', async () => {
    const dir = join(scratch, 'missing', 'configs');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'model: m\ntrain_prompts:\n  - prompts/x.json\ntest_prompts: [prompts/nowhere]\noutput_dir: out\n');
    writeFileSync(join(dir, 'x.json'), '{}');
    mkdirSync(join(scratch, 'missing', 'prompts'));
    writeFileSync(join(scratch, 'missing', 'prompts', 'x.json'), '{"request": "r", "targets": ["{a}"]}');
    const error = (await loadTrainConfig(file, { cwd: scratch, warn: noWarnings }).catch((e: unknown) => e)) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.field).toBe('test_prompts[0]');
    for (const base of [scratch, dir, dirname(dir), '/']) expect(error.message).toContain(join(base, 'prompts/nowhere'));
  });
});

describe('our own keys', () => {
  test('are read, with built-in task ids among the prompts', async () => {
    writeFileSync(join(scratch, 'p.json'), '{"request": "r", "targets": ["{a}", "{b}"]}');
    const config = await loadConfig(
      [
        'model: ~/models/SmolLM2-135M-Instruct.Q4_1.gguf',
        'train_prompts: [p.json, RNG:1-10, countries:europe]',
        'test_prompts: bio-attributes:3',
        'alg_config: {n_iters: 7, early_stop: true, gamma: 0.5, batch_size: 8}',
        'lora: {rank: 8, alpha: 16, target_modules: [q_proj, v_proj]}',
        'lr: 1e-4',
        'objective: gem',
        'gem: {beta: 0.5, h: logsigmoid}',
        'device: cuda:1',
        'seed: 4294967295',
        'warmup_steps: 10',
        'schedule: cosine',
        'prompts_per_step: 3',
        'generate: false',
        'chat_template_kwargs: {enable_thinking: false, date_string: 26 Jul 2024}',
        'output_dir: results/x',
      ].join('\n'),
    );
    expect(config).toEqual({
      file: join(scratch, 'c.yaml'),
      model: '~/models/SmolLM2-135M-Instruct.Q4_1.gguf',
      trainPrompts: [join(scratch, 'p.json'), 'rng:1-10', 'countries:europe'],
      testPrompts: ['bio-attributes:3'],
      alg: { nIters: 7, earlyStop: true, gamma: 0.5, batchSize: 8 },
      loadModel: false,
      outputDir: join(scratch, 'results/x'),
      lora: { rank: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'] },
      lr: 1e-4,
      objective: { kind: 'gem', beta: 0.5, h: 'logsigmoid' },
      device: 'cuda:1',
      seed: 4294967295,
      warmupSteps: 10,
      schedule: 'cosine',
      promptsPerStep: 3,
      generate: false,
      chatTemplateKwargs: { enable_thinking: false, date_string: '26 Jul 2024' },
    });
  });

  test('gem alone takes GEM defaults; null means the default; absent alg_config gives 50 passes', async () => {
    const config = await loadConfig('model: m\ntrain_prompts: [fruits]\noutput_dir: o\nobjective: gem\nseed:\nalg_config:\n');
    expect(config.objective).toEqual({ kind: 'gem', beta: 0.7, h: 'linear' });
    expect(config.seed).toBe(0);
    expect(config.alg).toEqual({ nIters: 50, earlyStop: false, gamma: 0.2, batchSize: 32 });
  });

  test('unknown and ignored keys warn, naming the file and the key', async () => {
    const warnings: string[] = [];
    await loadConfig(
      'model: m\ntrain_prompts: [fruits]\noutput_dir: o\nepochs: 3\nalg_config: {n_iters: 2, lr: 1}\ngem: {beta: 0.5}\nckpt_dir: c\n',
      (m) => warnings.push(m),
    );
    const file = join(scratch, 'c.yaml');
    expect(warnings).toHaveLength(4);
    expect(warnings.every((w) => w.startsWith(file))).toBe(true);
    expect(warnings[0]).toContain('"epochs"');
    expect(warnings[1]).toContain('"alg_config.lr"');
    expect(warnings[2]).toContain('gem settings ignored');
    expect(warnings[3]).toContain('ckpt_dir ignored');
  });
});

async function loadConfig(yamlText: string, warn: WarnFn = noWarnings): Promise<TrainConfig> {
  writeFileSync(join(scratch, 'c.yaml'), yamlText);
  return loadTrainConfig('c.yaml', { cwd: scratch, warn });
}

describe('the output directory', () => {
  test('comes from outputDir (the CLI\'s --out) over output_dir, and a config may then leave output_dir out', async () => {
    writeFileSync(join(scratch, 'c.yaml'), 'model: m\ntrain_prompts: [fruits]\n');
    expect((await loadTrainConfig('c.yaml', { cwd: scratch, warn: noWarnings, outputDir: 'given' })).outputDir).toBe(join(scratch, 'given'));
    writeFileSync(join(scratch, 'c.yaml'), 'model: m\ntrain_prompts: [fruits]\noutput_dir: written\n');
    expect((await loadTrainConfig('c.yaml', { cwd: scratch, warn: noWarnings })).outputDir).toBe(join(scratch, 'written'));
    expect((await loadTrainConfig('c.yaml', { cwd: scratch, warn: noWarnings, outputDir: '/abs/given' })).outputDir).toBe('/abs/given');
  });
});

describe('bad configs', () => {
  const base = 'model: m\ntrain_prompts: [fruits]\noutput_dir: o\n';
  const cases: [string, string, string | undefined, RegExp][] = [
    ['bad YAML', 'model: m\ntrain_prompts: [fruits\noutput_dir: o\n', undefined, /not valid YAML: .*line \d+, column \d+/s],
    ['a duplicate key', `${base}model: n\n`, undefined, /not valid YAML: .*unique/is],
    ['an empty file', '', undefined, /is empty; a config needs at least model, train_prompts and output_dir/],
    ['a list', '- model: m\n', undefined, /must be a mapping/],
    ['no model', 'train_prompts: [fruits]\noutput_dir: o\n', 'model', /missing; give a Hugging Face model id/],
    ['a numeric model', 'model: 7\ntrain_prompts: [fruits]\noutput_dir: o\n', 'model', /non-empty string, got the number 7/],
    ['no train_prompts', 'model: m\noutput_dir: o\n', 'train_prompts', /missing/],
    ['empty train_prompts', 'model: m\ntrain_prompts: []\noutput_dir: o\n', 'train_prompts', /is empty/],
    ['a number among the prompts', 'model: m\ntrain_prompts: [fruits, 3]\noutput_dir: o\n', 'train_prompts[1]', /non-empty string/],
    ['a bad built-in id', 'model: m\ntrain_prompts: [rng:10-1]\noutput_dir: o\n', 'train_prompts[0]', /LOW \(10\) must be less than HIGH \(1\)/],
    ['no output_dir', 'model: m\ntrain_prompts: [fruits]\n', 'output_dir', /missing/],
    ['alg_config not a mapping', `${base}alg_config: 5\n`, 'alg_config', /must be a mapping/],
    ['zero n_iters', `${base}alg_config: {n_iters: 0}\n`, 'alg_config.n_iters', /whole number from 1 up, got the number 0/],
    ['fractional n_iters', `${base}alg_config: {n_iters: 2.5}\n`, 'alg_config.n_iters', /whole number/],
    ['early_stop yes', `${base}alg_config: {early_stop: yes}\n`, 'alg_config.early_stop', /true or false, got the string "yes"/],
    ['negative gamma', `${base}alg_config: {gamma: -1}\n`, 'alg_config.gamma', /≥ 0/],
    ['zero batch_size', `${base}alg_config: {batch_size: 0}\n`, 'alg_config.batch_size', /whole number/],
    ['load_model without ckpt_dir', `${base}load_model: true\n`, 'ckpt_dir', /load_model is true/],
    ['zero rank', `${base}lora: {rank: 0}\n`, 'lora.rank', /whole number from 1/],
    ['negative alpha', `${base}lora: {alpha: -8}\n`, 'lora.alpha', /> 0/],
    ['no target modules', `${base}lora: {target_modules: []}\n`, 'lora.target_modules', /is empty/],
    ['a repeated target module', `${base}lora: {target_modules: [q_proj, q_proj]}\n`, 'lora.target_modules', /more than once/],
    ['zero lr', `${base}lr: 0\n`, 'lr', /> 0, got the number 0/],
    ['lr as text', `${base}lr: fast\n`, 'lr', /finite number/],
    ['an unknown objective', `${base}objective: kl\n`, 'objective', /one of ce, gem/],
    ['an unknown h', `${base}objective: gem\ngem: {h: tanh}\n`, 'gem.h', /one of linear, logsigmoid/],
    ['zero beta', `${base}objective: gem\ngem: {beta: 0}\n`, 'gem.beta', /> 0/],
    ['device gpu', `${base}device: gpu\n`, 'device', /auto, cpu, cuda or cuda:N/],
    ['negative seed', `${base}seed: -1\n`, 'seed', /0 to 4294967295/],
    ['a seed too large', `${base}seed: 4294967296\n`, 'seed', /0 to 4294967295/],
    ['fractional warmup', `${base}warmup_steps: 1.5\n`, 'warmup_steps', /whole number/],
    ['an unknown schedule', `${base}schedule: linear\n`, 'schedule', /constant, cosine/],
    ['zero prompts per step', `${base}prompts_per_step: 0\n`, 'prompts_per_step', /at least 1|from 1/],
    ['generate no', `${base}generate: no\n`, 'generate', /true or false/],
    ['chat_template_kwargs as a list', `${base}chat_template_kwargs: [enable_thinking]\n`, 'chat_template_kwargs', /must be a mapping/],
    ['a chat template variable that is no name', `${base}chat_template_kwargs: {enable-thinking: false}\n`, 'chat_template_kwargs.enable-thinking', /not a template variable name/],
  ];
  test.each(cases)('%s', async (_name, text, field, problem) => {
    const error = await loadConfig(text).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect(error).toBeInstanceOf(DiffuseError);
    const configError = error as ConfigError;
    const file = join(scratch, 'c.yaml');
    expect(configError.code).toBe('CONFIG');
    expect(configError.file).toBe(file);
    expect(configError.field).toBe(field);
    expect(configError.message.startsWith(field ? `${file}: ${field}: ` : `${file}: `)).toBe(true);
    expect(configError.message).toMatch(problem);
  });

  test('a missing file', async () => {
    await expect(loadTrainConfig(join(scratch, 'absent.yaml'))).rejects.toThrow(/absent\.yaml: cannot be read/);
  });
});
