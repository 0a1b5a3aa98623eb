/**
 * A tiny random model that has a real tokenizer and chat template: the weights of
 * makeTinyModel (vocabulary 600) in a GGUF with the tokenizer metadata of the tiny
 * SentencePiece fixture, so loadModel, targetDistributions, sample and evaluate all run on it
 * in milliseconds.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { readGguf } from '../../lib/formats/gguf.js';
import { loadModel } from '../../lib/model/load.js';
import type { Model } from '../../lib/model/model.js';
import { gguf, writeGgufModel, type GgufModelOptions, type GgufWriteValue } from '../helpers/write-gguf.js';
import { makeTinyModel } from '../helpers/tiny-model.js';

const fixture = new URL('../fixtures/tokenizer/tiny-spm.gguf', import.meta.url).pathname;

/** Writes the model to a fresh temporary directory and returns the file's path. */
export async function writeTinyChatModel(seed = 1, options: Omit<GgufModelOptions, 'tokenizer'> = {}): Promise<string> {
  const spm = await readGguf(fixture);
  const tokenizer: Record<string, GgufWriteValue> = {};
  for (const [key, value] of spm.metadata) {
    if (!key.startsWith('tokenizer.')) continue;
    if (key === 'tokenizer.ggml.scores') tokenizer[key] = gguf.array('f32', value as number[]);
    else if (key === 'tokenizer.ggml.token_type') tokenizer[key] = gguf.array('i32', value as number[]);
    else tokenizer[key] = value as GgufWriteValue;
  }
  const vocab = (spm.metadata.get('tokenizer.ggml.tokens') as string[]).length;
  const path = join(await mkdtemp(join(tmpdir(), 'diffuse-eval-')), 'tiny-chat.gguf');
  await writeGgufModel(path, makeTinyModel({ vocab, seed }), { ...options, tokenizer });
  return path;
}

export async function loadTinyChatModel(seed = 1): Promise<Model> {
  return loadModel(await writeTinyChatModel(seed), { device: 'cpu' });
}
