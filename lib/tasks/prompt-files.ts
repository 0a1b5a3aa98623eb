/**
 * The reference's prompt files, read as they are: one JSON object per file with `request`,
 * `response` (a string or a list of strings), `targets`, and optional `weights` and `eos`. A
 * directory stands for every `*.json` below it, recursively, in sorted path order (the paper's
 * code globs them recursively; as with Python's glob, names starting with a dot are skipped).
 */
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';

import type { TargetRequest } from '../targets/target-set.js';
import { TaskError, defaultWarn, type WarnFn } from './errors.js';

/** A named list of prompts: what training and evaluation take. */
export interface Task {
  /** The built-in id, or the file's base name without `.json`, or the directory's base name. */
  name: string;
  /** Where it came from: `builtin:<id>`, or the absolute path of the prompt file or directory. */
  source: string;
  prompts: TargetRequest[];
  /** Where each prompt came from, parallel to `prompts`: its file, or `builtin:<id>#<index>`. */
  promptSources: string[];
  /**
   * False when some prompt has an empty target list (the reference's `ficticious-people.json`):
   * such a task is for evaluation only, and training must reject it.
   */
  hasTargets: boolean;
}

/** How prompt files and directories are read: where relative paths start, and where warnings go. */
export interface ReadOptions {
  /** Relative paths are taken from here (default: the process's current directory). */
  cwd?: string;
  /** Called for each fixable oddity (an unknown key, which is ignored). */
  warn?: WarnFn;
}

const promptKeys = ['request', 'response', 'targets', 'weights', 'eos'] as const;

/** A short description of a JSON value for error messages. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `a list of ${value.length}`;
  switch (typeof value) {
    case 'string':
      return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
    case 'number':
    case 'boolean':
      return `the ${typeof value} ${String(value)}`;
    case 'object':
      return 'an object';
    default:
      return typeof value;
  }
}

/** The offset of the first JSON syntax error in `text` (JSON.parse does not always say where). */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const fail = (): never => {
    throw i;
  };
  const skipSpace = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const expect = (char: string) => {
    skipSpace();
    if (text[i] !== char) fail();
    i++;
  };
  const literal = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;
  function string(): void {
    expect('"');
    while (i < text.length && text[i] !== '"') {
      if (text[i] < ' ') fail();
      if (text[i] === '\\') {
        if (!/^(?:["\\/bfnrt]|u[0-9a-fA-F]{4})/.test(text.slice(i + 1, i + 6))) fail();
        i += text[i + 1] === 'u' ? 6 : 2;
      } else i++;
    }
    expect('"');
  }
  function value(): void {
    skipSpace();
    const open = text[i];
    if (open === '{' || open === '[') {
      const close = open === '{' ? '}' : ']';
      i++;
      skipSpace();
      if (text[i] === close) {
        i++;
        return;
      }
      for (;;) {
        if (open === '{') {
          skipSpace();
          string();
          expect(':');
        }
        value();
        skipSpace();
        if (text[i] === ',') i++;
        else return expect(close);
      }
    }
    if (open === '"') return string();
    literal.lastIndex = i;
    if (!literal.test(text)) fail();
    i = literal.lastIndex;
  }
  try {
    value();
    skipSpace();
    return i < text.length ? i : -1;
  } catch (at) {
    return at as number;
  }
}

/** "unexpected X at line L, column C" for a JSON.parse failure. */
function jsonErrorPlace(text: string, error: unknown): string {
  const at = jsonErrorOffset(text);
  if (at < 0) return (error as Error).message;
  const before = text.slice(0, at);
  const line = before.split('\n').length;
  const column = at - before.lastIndexOf('\n');
  return `unexpected ${at < text.length ? JSON.stringify(text[at]) : 'end of file'} at line ${line}, column ${column}`;
}

/** Checks one prompt object in the reference's format and returns it with only the known keys. */
export function parsePromptJson(text: string, file: string, warn: WarnFn = defaultWarn): TargetRequest {
  const source = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  let data: unknown;
  try {
    data = JSON.parse(source);
  } catch (error) {
    throw new TaskError(file, undefined, `not valid JSON: ${jsonErrorPlace(source, error)}`, {
      cause: error,
    });
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data))
    throw new TaskError(file, undefined, `expected one JSON object with "request" and "targets", got ${describeValue(data)}`);
  const obj = data as Record<string, unknown>;
  for (const key of Object.keys(obj))
    if (!(promptKeys as readonly string[]).includes(key))
      warn(`${file}: unknown key ${JSON.stringify(key)} ignored (a prompt has ${promptKeys.join(', ')})`);

  if (!('request' in obj)) throw new TaskError(file, 'request', 'missing; give the user message as a string');
  if (typeof obj.request !== 'string') throw new TaskError(file, 'request', `must be a string, got ${describeValue(obj.request)}`);
  const prompt: TargetRequest = { request: obj.request, targets: [] };

  if ('response' in obj) {
    const response = obj.response;
    if (typeof response === 'string') prompt.response = response;
    else if (Array.isArray(response)) {
      if (response.length === 0)
        throw new TaskError(file, 'response', 'is an empty list; give at least one string (use [""] for no answer prefix)');
      response.forEach((r, i) => {
        if (typeof r !== 'string') throw new TaskError(file, `response[${i}]`, `must be a string, got ${describeValue(r)}`);
      });
      prompt.response = response as string[];
    } else throw new TaskError(file, 'response', `must be a string or a list of strings, got ${describeValue(response)}`);
  }

  if (!('targets' in obj))
    throw new TaskError(file, 'targets', 'missing; give the valid answers as a list of strings (an empty list marks an evaluation-only prompt)');
  if (!Array.isArray(obj.targets)) throw new TaskError(file, 'targets', `must be a list of strings, got ${describeValue(obj.targets)}`);
  obj.targets.forEach((t, i) => {
    if (typeof t !== 'string') throw new TaskError(file, `targets[${i}]`, `must be a string, got ${describeValue(t)}`);
  });
  prompt.targets = obj.targets as string[];

  // The reference treats null like an absent list: uniform weights.
  if ('weights' in obj && obj.weights !== null) {
    const weights = obj.weights;
    const n = prompt.targets.length;
    if (!Array.isArray(weights)) throw new TaskError(file, 'weights', `must be a list of numbers, one per target, got ${describeValue(weights)}`);
    if (weights.length !== n)
      throw new TaskError(file, 'weights', `has ${weights.length} entries for ${n} targets; give one weight per target, or leave weights out for a uniform distribution`);
    let total = 0;
    weights.forEach((w, i) => {
      if (typeof w !== 'number' || !Number.isFinite(w) || w < 0)
        throw new TaskError(file, `weights[${i}]`, `must be a finite number ≥ 0, got ${describeValue(w)}`);
      total += w;
    });
    if (n > 0 && total <= 0) throw new TaskError(file, 'weights', 'are all zero; at least one target needs a positive weight');
    prompt.weights = weights as number[];
  }

  if ('eos' in obj) {
    if (typeof obj.eos !== 'boolean') throw new TaskError(file, 'eos', `must be true or false, got ${describeValue(obj.eos)}`);
    prompt.eos = obj.eos;
  }
  return prompt;
}

/** Reads and checks one prompt file. */
export async function readPromptFile(file: string, warn: WarnFn = defaultWarn): Promise<TargetRequest> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new TaskError(file, undefined, `cannot be read (${(error as Error).message})`, { cause: error });
  }
  return parsePromptJson(text, file, warn);
}

/** Every `*.json` file below `dir` (absolute paths), sorted by path as Python's sorted(glob) would. */
export async function listPromptFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  const visited = new Set<string>();
  async function walk(abs: string, rel: string): Promise<void> {
    const real = await realpath(abs);
    if (visited.has(real)) return; // a symbolic link back into the tree
    visited.add(real);
    const entries = await readdir(abs, { withFileTypes: true });
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const childAbs = join(abs, entry.name);
      const childRel = rel ? `${rel}/${entry.name}` : entry.name;
      let isDir = entry.isDirectory();
      let isFile = entry.isFile();
      if (entry.isSymbolicLink()) {
        const target = await stat(childAbs).catch(() => null);
        isDir = target?.isDirectory() ?? false;
        isFile = target?.isFile() ?? false;
      }
      if (isDir) await walk(childAbs, childRel);
      else if (isFile && entry.name.endsWith('.json')) found.push(childRel);
    }
  }
  await walk(dir, '');
  return found.sort().map((rel) => join(dir, rel));
}

/** A task from one prompt file or a directory of them. */
export async function readPromptPath(path: string, options: ReadOptions = {}): Promise<Task> {
  const warn = options.warn ?? defaultWarn;
  const abs = resolve(options.cwd ?? process.cwd(), path);
  const info = await stat(abs).catch(() => null);
  if (!info) throw new TaskError(abs, undefined, 'no such file or directory; give a prompt file, a directory of them, or a built-in task id');
  let files: string[];
  let name: string;
  if (info.isDirectory()) {
    files = await listPromptFiles(abs);
    if (files.length === 0) throw new TaskError(abs, undefined, 'has no *.json prompt files below it');
    name = basename(abs);
  } else {
    files = [abs];
    name = basename(abs).replace(/\.json$/, '');
  }
  const prompts: TargetRequest[] = [];
  for (const file of files) prompts.push(await readPromptFile(file, warn));
  return { name, source: abs, prompts, promptSources: files, hasTargets: prompts.every((p) => p.targets.length > 0) };
}
