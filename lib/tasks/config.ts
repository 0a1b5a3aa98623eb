/**
 * Training configs: the reference's YAML files read as they are (`model`, `train_prompts`,
 * `test_prompts`, `alg_config`, `load_model`, `ckpt_dir`, `output_dir`), plus our own keys. Every
 * key has the reference's default where it has one. Prompt paths in the reference's configs are
 * relative to its repository root, so each is looked for from the current directory, then from
 * the config's directory and each of its ancestors.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';

import type { Device } from '../model/load.js';
import { loraModules } from '../model/adapter.js';
import { gemDefaults, loraDefaults, trainDefaults } from '../train/defaults.js';
import type { Objective } from '../train/objective.js';
import { builtinTask } from './builtin.js';
import { ConfigError, defaultWarn, TaskError, type WarnFn } from './errors.js';
import { isBuiltinSpec } from './load.js';
import { describeValue } from './prompt-files.js';

/** `alg_config`: the reference's training loop settings. */
export interface AlgConfig {
  /** `n_iters`: passes over all training prompts (default 50, the paper's "up to 50"). */
  nIters: number;
  /** `early_stop`: stop once the loss is ≤ (1 + gamma) · Σ H(p*), the best loss possible (default false). */
  earlyStop: boolean;
  /** `gamma`: the early-stop slack (default 0.2). */
  gamma: number;
  /** `batch_size`: targets per forward/backward batch (default 32). */
  batchSize: number;
}

/** `lora`: the adapter (the reference hard-codes PEFT's LoraConfig with r = 4). */
export interface LoraSettings {
  /** `rank` r (default 4). */
  rank: number;
  /** `alpha` α; the update is scaled by α / r (default 8, PEFT's default). */
  alpha: number;
  /** `target_modules`: the linear layers adapted (default q, k, v, o, gate, up and down projections). */
  targetModules: string[];
}

/** A training config (the paper's YAML plus our keys), read and checked, every default filled in. */
export interface TrainConfig {
  /** The config file, absolute. */
  file: string;
  /** `model`: as written (a Hugging Face id, a directory or a GGUF file); checked when the model is loaded. */
  model: string;
  /** `train_prompts`: absolute prompt files or directories, or built-in task ids; at least one. */
  trainPrompts: string[];
  /** `test_prompts`: the same, for evaluation after training (default none). */
  testPrompts: string[];
  alg: AlgConfig;
  /** `load_model`: start from the adapter in `ckpt_dir` instead of a fresh one (default false). */
  loadModel: boolean;
  /** `ckpt_dir`: the adapter to start from, absolute (relative paths are from the current directory); set when loadModel is. */
  ckptDir?: string;
  /** `output_dir`: where the adapter and results go, absolute (relative paths are from the current directory). */
  outputDir: string;
  lora: LoraSettings;
  /** `lr`: AdamW's learning rate (default 5e-5). */
  lr: number;
  /** `objective`: ce or gem, with `gem.beta` (default 0.7) and `gem.h` (linear or logsigmoid; default linear), filled in. */
  objective: Objective;
  /** `device`: auto, cpu, cuda or cuda:N (default auto: a GPU when there is one). */
  device: Device;
  /** `seed`: for the adapter's initialisation, the prompt order of each pass and any sampling, 0 ≤ seed < 2^32 (default 0). */
  seed: number;
  /** `warmup_steps`: optimiser steps of linear learning-rate warmup from 0 (default 0, as the reference). */
  warmupSteps: number;
  /** `schedule`: the learning rate after warmup, constant (the reference) or cosine decay to 0 (default constant). */
  schedule: 'constant' | 'cosine';
  /**
   * `prompts_per_step`: prompts per optimiser step (default 1: one step per prompt, every target of
   * the prompt in it, as the reference accumulates its target batches); N > 1 averages the
   * gradients of N prompts, one engine step over their tries.
   */
  promptsPerStep: number;
  /** `generate`: sample from the test prompts after training (default true, as the reference). */
  generate: boolean;
  /**
   * `chat_template_kwargs`: variables for the model's chat template, as transformers'
   * apply_chat_template takes them (e.g. `enable_thinking: false` for Qwen3); default none.
   */
  chatTemplateKwargs: Record<string, unknown>;
}

/** How a config is read. */
export interface ConfigOptions {
  /** Where relative paths are looked for first (default: the process's current directory). */
  cwd?: string;
  /** Called for each fixable oddity (an unknown key, which is ignored). */
  warn?: WarnFn;
  /** Where results go instead of `output_dir` (the CLI's --out); with it the config need not name one. Relative to `cwd`. */
  outputDir?: string;
}

/** The keys of one YAML mapping, read with checks; absent and null keys take the default. */
class Mapping {
  constructor(
    readonly file: string,
    readonly prefix: string,
    readonly values: Record<string, unknown>,
  ) {}

  field(key: string): string {
    return this.prefix ? `${this.prefix}.${key}` : key;
  }

  fail(key: string, problem: string): never {
    throw new ConfigError(this.file, this.field(key), problem);
  }

  get(key: string): unknown {
    const value = this.values[key];
    return value === null ? undefined : value;
  }

  warnUnknown(known: readonly string[], warn: WarnFn): void {
    for (const key of Object.keys(this.values))
      if (!known.includes(key)) warn(`${this.file}: unknown key ${JSON.stringify(this.field(key))} ignored (known here: ${known.join(', ')})`);
  }

  mapping(key: string): Mapping {
    const value = this.get(key);
    if (value === undefined) return new Mapping(this.file, this.field(key), {});
    if (typeof value !== 'object' || Array.isArray(value)) this.fail(key, `must be a mapping of keys to values, got ${describeValue(value)}`);
    return new Mapping(this.file, this.field(key), value as Record<string, unknown>);
  }

  /** A non-empty string; `fallback` is either the default or, for a required key, what to say when it is missing. */
  string(key: string, fallback: { default: string } | { missing: string }): string {
    const value = this.get(key);
    if (value === undefined) {
      if ('missing' in fallback) this.fail(key, `missing; ${fallback.missing}`);
      return fallback.default;
    }
    if (typeof value !== 'string' || value.trim() === '') this.fail(key, `must be a non-empty string, got ${describeValue(value)}`);
    return value;
  }

  boolean(key: string, fallback: boolean): boolean {
    const value = this.get(key);
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') {
      const yaml11 = typeof value === 'string' && /^(y|yes|n|no|on|off)$/i.test(value);
      this.fail(key, `must be true or false, got ${describeValue(value)}${yaml11 ? ' (YAML 1.2 reads yes/no/on/off as text)' : ''}`);
    }
    return value;
  }

  integer(key: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
    const value = this.get(key);
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
      this.fail(key, `must be a whole number from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ' up'}, got ${describeValue(value)}`);
    return value;
  }

  /** A finite number ≥ 0, or > 0 when `positive`. */
  number(key: string, fallback: number, positive: boolean): number {
    const value = this.get(key);
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (positive && value === 0))
      this.fail(key, `must be a finite number ${positive ? '> 0' : '≥ 0'}, got ${describeValue(value)}`);
    return value;
  }

  choice<T extends string>(key: string, options: readonly T[], fallback: T): T {
    const value = this.get(key);
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || !(options as readonly string[]).includes(value))
      this.fail(key, `must be one of ${options.join(', ')}, got ${describeValue(value)}`);
    return value as T;
  }

  stringList(key: string, required: boolean): string[] {
    const value = this.get(key);
    if (value === undefined) {
      if (required) this.fail(key, 'missing; give a list of prompt files, directories or built-in task ids');
      return [];
    }
    const list = typeof value === 'string' ? [value] : value;
    if (!Array.isArray(list)) this.fail(key, `must be a list of strings, got ${describeValue(value)}`);
    list.forEach((item, i) => {
      if (typeof item !== 'string' || item.trim() === '')
        throw new ConfigError(this.file, `${this.field(key)}[${i}]`, `must be a non-empty string, got ${describeValue(item)}`);
    });
    if (required && list.length === 0) this.fail(key, 'is empty; give at least one prompt file, directory or built-in task id');
    return list as string[];
  }
}

const topKeys = [
  'model', 'train_prompts', 'test_prompts', 'alg_config', 'load_model', 'ckpt_dir', 'output_dir',
  'lora', 'lr', 'objective', 'gem', 'device', 'seed', 'warmup_steps', 'schedule', 'prompts_per_step', 'generate',
  'chat_template_kwargs',
];

/** Candidate bases for a relative prompt path: the current directory, then the config's directory and its ancestors. */
function searchBases(cwd: string, file: string): string[] {
  const bases = [resolve(cwd)];
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    if (!bases.includes(dir)) bases.push(dir);
    if (dirname(dir) === dir) break;
  }
  return bases;
}

async function resolvePromptSpecs(specs: string[], field: string, file: string, cwd: string): Promise<string[]> {
  const out: string[] = [];
  for (const [i, spec] of specs.entries()) {
    const at = `${field}[${i}]`;
    if (isBuiltinSpec(spec)) {
      try {
        out.push(builtinTask(spec).name);
      } catch (error) {
        if (error instanceof TaskError) throw new ConfigError(file, at, error.message, { cause: error });
        throw error;
      }
      continue;
    }
    const tried = isAbsolute(spec) ? [spec] : searchBases(cwd, file).map((base) => resolve(base, spec));
    let found: string | undefined;
    for (const path of tried) {
      if (await stat(path).catch(() => null)) {
        found = path;
        break;
      }
    }
    if (found === undefined)
      throw new ConfigError(file, at, `${JSON.stringify(spec)} not found; looked for ${tried.join(', ')}. Give a path that exists from one of those places, an absolute path, or a built-in task id`);
    out.push(found);
  }
  return out;
}

/** Reads and checks a training config. */
export async function loadTrainConfig(path: string, options: ConfigOptions = {}): Promise<TrainConfig> {
  const cwd = options.cwd ?? process.cwd();
  const warn = options.warn ?? defaultWarn;
  const file = resolve(cwd, path);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(file, undefined, `cannot be read (${(error as Error).message})`, { cause: error });
  }

  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) throw new ConfigError(file, undefined, `not valid YAML: ${doc.errors[0].message}`, { cause: doc.errors[0] });
  for (const w of doc.warnings) warn(`${file}: ${w.message}`);
  const data: unknown = doc.toJS();
  if (data === null || data === undefined) throw new ConfigError(file, undefined, 'is empty; a config needs at least model, train_prompts and output_dir');
  if (typeof data !== 'object' || Array.isArray(data))
    throw new ConfigError(file, undefined, `must be a mapping of keys to values, got ${describeValue(data)}`);

  const top = new Mapping(file, '', data as Record<string, unknown>);
  top.warnUnknown(topKeys, warn);

  const alg = top.mapping('alg_config');
  alg.warnUnknown(['n_iters', 'early_stop', 'gamma', 'batch_size'], warn);
  const lora = top.mapping('lora');
  lora.warnUnknown(['rank', 'alpha', 'target_modules'], warn);
  const gem = top.mapping('gem');
  gem.warnUnknown(['beta', 'h'], warn);

  const kind = top.choice('objective', ['ce', 'gem'] as const, 'ce');
  if (kind === 'ce' && Object.keys(gem.values).length > 0) warn(`${file}: gem settings ignored because objective is ce (set objective: gem to use them)`);
  const objective: Objective =
    kind === 'ce' ? { kind } : { kind, beta: gem.number('beta', gemDefaults.beta, true), h: gem.choice('h', ['linear', 'logsigmoid'] as const, gemDefaults.h) };

  const device = top.string('device', { default: 'auto' });
  if (!/^(auto|cpu|cuda|cuda:(0|[1-9]\d*))$/.test(device)) top.fail('device', `must be auto, cpu, cuda or cuda:N, got ${describeValue(device)}`);

  const targetModules = lora.get('target_modules') === undefined ? [...loraModules] : lora.stringList('target_modules', false);
  if (targetModules.length === 0) lora.fail('target_modules', 'is empty; list the linear layers to adapt, or leave it out for all seven projections');
  if (new Set(targetModules).size !== targetModules.length) lora.fail('target_modules', 'lists a module more than once');

  const loadModel = top.boolean('load_model', false);
  let ckptDir: string | undefined;
  if (loadModel) ckptDir = resolve(cwd, top.string('ckpt_dir', { missing: 'load_model is true, so say which adapter directory to start from' }));
  else if (top.get('ckpt_dir') !== undefined) warn(`${file}: ckpt_dir ignored because load_model is not true`);

  return {
    file,
    model: top.string('model', { missing: 'give a Hugging Face model id, a model directory or a GGUF file' }),
    trainPrompts: await resolvePromptSpecs(top.stringList('train_prompts', true), 'train_prompts', file, cwd),
    testPrompts: await resolvePromptSpecs(top.stringList('test_prompts', false), 'test_prompts', file, cwd),
    alg: {
      nIters: alg.integer('n_iters', trainDefaults.nIters, 1),
      earlyStop: alg.boolean('early_stop', trainDefaults.earlyStop),
      gamma: alg.number('gamma', trainDefaults.gamma, false),
      batchSize: alg.integer('batch_size', 32, 1),
    },
    loadModel,
    ...(ckptDir === undefined ? {} : { ckptDir }),
    outputDir: resolve(cwd, options.outputDir ?? top.string('output_dir', { missing: 'say which directory the adapter and results go to (or give --out DIR)' })),
    lora: {
      rank: lora.integer('rank', loraDefaults.rank, 1),
      alpha: lora.number('alpha', loraDefaults.alpha, true),
      targetModules,
    },
    lr: top.number('lr', trainDefaults.lr, true),
    objective,
    device: device as Device,
    seed: top.integer('seed', trainDefaults.seed, 0, 0xffffffff),
    warmupSteps: top.integer('warmup_steps', trainDefaults.warmupSteps, 0),
    schedule: top.choice('schedule', ['constant', 'cosine'] as const, trainDefaults.schedule),
    promptsPerStep: top.integer('prompts_per_step', trainDefaults.promptsPerStep, 1),
    generate: top.boolean('generate', true),
    chatTemplateKwargs: templateKwargs(top.mapping('chat_template_kwargs')),
  };
}

/** `chat_template_kwargs`: names a Jinja template can read (letters, digits, _), values as written. */
function templateKwargs(m: Mapping): Record<string, unknown> {
  for (const key of Object.keys(m.values))
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) m.fail(key, 'is not a template variable name (letters, digits and _, not starting with a digit)');
  return { ...m.values };
}
