/** What every command shares: model loading, error reporting, number and bar formatting. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { Command } from 'commander';

import { DiffuseError } from '../errors.js';
import { DEFAULT_MODEL } from '../model/default-model.js';
import { loadModel, type Device } from '../model/load.js';
import type { Model } from '../model/model.js';
import { packageRoot } from '../native.js';
import { Progress } from '../progress.js';

export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

/** Prints an error for a person and returns the exit code. */
export function reportError(error: unknown): number {
  if (error instanceof DiffuseError) {
    process.stderr.write(`diffuse: ${error.message}\n`);
    return 1;
  }
  const e = error as Error & { code?: string };
  if (e?.code?.startsWith?.('commander.')) return 2;
  process.stderr.write(`diffuse: internal error: ${e?.stack ?? String(error)}\nThis is a bug in diffuse; please report it with the command you ran.\n`);
  return 70;
}

export interface ModelOptions {
  model: string;
  device: Device;
  threads?: number;
  /** --chat-template-arg, collected. */
  chatTemplateArg?: Record<string, unknown>;
}

export const CHAT_TEMPLATE_ARG_HELP =
  "a variable for the model's chat template, as transformers' chat_template_kwargs: NAME=VALUE with a JSON value, repeatable (e.g. enable_thinking=false: Qwen3 without its thinking block)";

/** --model, --device, --threads, --chat-template-arg on a command. */
export function addModelOptions(command: Command): Command {
  return command
    .option('-m, --model <spec>', `a model name, .gguf file, Hugging Face directory or hub id (org/name)`, DEFAULT_MODEL)
    .option('--device <device>', "where to run: auto, cpu, cuda or cuda:N", 'auto')
    .option('--threads <n>', 'CPU threads (default: all cores)', (v) => parsePositiveInt(v, '--threads'))
    .option('--chat-template-arg <name=value>', CHAT_TEMPLATE_ARG_HELP, parseChatTemplateArg);
}

/**
 * One --chat-template-arg NAME=VALUE added to those before it. The value is JSON (true, false,
 * null, a number, "a string", a list or an object), so a typo such as enable_thinking=flase is
 * an error rather than a string the template would take as true.
 */
export function parseChatTemplateArg(arg: string, previous: Record<string, unknown> = {}): Record<string, unknown> {
  const at = arg.indexOf('=');
  const name = at < 0 ? '' : arg.slice(0, at).trim();
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
    throw new DiffuseError('INVALID_ARGUMENT', `--chat-template-arg must be NAME=VALUE with NAME a template variable (letters, digits, _), not '${arg}'`);
  const text = arg.slice(at + 1).trim();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new DiffuseError(
      'INVALID_ARGUMENT',
      `--chat-template-arg ${name}: the value must be JSON (true, false, null, a number, or a quoted string such as ${name}='"text"'), not '${text}'`,
    );
  }
  if (name in previous) throw new DiffuseError('INVALID_ARGUMENT', `--chat-template-arg ${name} is given twice`);
  return { ...previous, [name]: value };
}

export function parsePositiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new DiffuseError('INVALID_ARGUMENT', `${flag} must be a positive integer, not '${value}'`);
  return n;
}

export function parseWholeNumber(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new DiffuseError('INVALID_ARGUMENT', `${flag} must be a whole number ≥ 0, not '${value}'`);
  return n;
}

export function parseNumber(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isFinite(n)) throw new DiffuseError('INVALID_ARGUMENT', `${flag} must be a number, not '${value}'`);
  return n;
}

/** Loads the model named on the command line, saying so on stderr unless quiet. */
export async function loadCliModel(options: ModelOptions, quiet: boolean): Promise<Model> {
  const say = (line: string) => {
    if (!quiet) process.stderr.write(`${line}\n`);
  };
  const started = Date.now();
  const model = await loadModel(options.model, {
    device: options.device,
    threads: options.threads,
    chatTemplateKwargs: options.chatTemplateArg,
    progress: new Progress({ json: quiet }),
  });
  say(`loaded ${options.model} on ${model.device} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return model;
}

/** A horizontal bar of `fraction` of `width` cells, in eighths. */
export function bar(fraction: number, width: number): string {
  const eighths = Math.round(Math.max(0, Math.min(1, fraction)) * width * 8);
  const full = Math.floor(eighths / 8);
  const partial = eighths % 8;
  return '█'.repeat(full) + (partial ? '▏▎▍▌▋▊▉'[partial - 1] : '');
}

export function percent(p: number): string {
  if (p >= 0.1) return `${(p * 100).toFixed(1)}%`;
  if (p >= 0.001) return `${(p * 100).toFixed(2)}%`;
  return `${(p * 100).toExponential(1)}%`;
}

export function clip(text: string, width: number): string {
  const flat = text.replace(/\n/g, '⏎');
  return flat.length <= width ? flat : `${flat.slice(0, width - 1)}…`;
}
