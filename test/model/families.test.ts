/**
 * Every supported family against transformers itself: tools/reference/family_fixtures.py made
 * a tiny random model of each (every weight random, norms too; windows shorter than the
 * sequences), saved it as a Hugging Face directory and through llama.cpp's converter as GGUF,
 * and recorded transformers' target log-probs. Ours, from both files, agree within 1e-4 nats
 * per target — through the trie (one pass over prompt + targets), not one sequence at a time.
 */
import { readFile } from 'node:fs/promises';

import { loadModelSpec } from '../../lib/model/tensors.js';
import { native, type NativeModel } from '../../lib/native.js';
import { buildTrieBatch, sequenceLogProbs, type PreparedPrompt } from '../../lib/targets/target-set.js';

interface Fixture {
  family: string;
  prompt_token_ids: number[];
  targets: { token_ids: number[]; token_logprobs: number[]; logprob: number }[];
  gguf: string | null;
}

const dir = new URL('../fixtures/families/', import.meta.url).pathname;
const families = ['mistral', 'qwen3', 'gemma', 'gemma2', 'gemma3_text'];

function prompt(f: Fixture): PreparedPrompt {
  const n = f.targets.length;
  return {
    request: f.family,
    responses: [''],
    targets: f.targets.map((_, i) => `t${i}`),
    weights: f.targets.map(() => 1 / n),
    promptTokens: f.prompt_token_ids,
    sequences: f.targets.map((t, i) => ({ target: i, response: 0, tokens: t.token_ids, weight: 1 / n })),
  };
}

async function worstDifference(path: string, f: Fixture): Promise<{ worst: number; config: Record<string, unknown> }> {
  const spec = await loadModelSpec(path);
  const model: NativeModel = await native().createModel({ config: spec.config, tensors: spec.tensors, device: 'cpu', threads: 1 });
  try {
    const trie = buildTrieBatch([prompt(f)]);
    const ours = sequenceLogProbs(trie, (await model.forward(trie.batch)).edgeLogProbs)[0];
    const worst = Math.max(...f.targets.map((t, i) => Math.abs(ours[i] - t.logprob)));
    return { worst, config: spec.config as unknown as Record<string, unknown> };
  } finally {
    model.dispose();
  }
}

describe.each(families)('the %s family against transformers', (family) => {
  let fixture: Fixture;
  beforeAll(async () => {
    fixture = JSON.parse(await readFile(`${dir}${family}.json`, 'utf8'));
  });

  it('gives every target transformers\' log-prob within 1e-4 nats from the Hugging Face directory', async () => {
    const { worst } = await worstDifference(`${dir}${family}`, fixture);
    expect({ family, format: 'hf', worst }).toEqual({ family, format: 'hf', worst: expect.any(Number) });
    expect(worst).toBeLessThanOrEqual(1e-4);
  });

  if (family !== 'mistral')
    it("gives the same from llama.cpp's GGUF conversion", async () => {
      const { worst } = await worstDifference(`${dir}${fixture.gguf}`, fixture);
      expect({ family, format: 'gguf', worst }).toEqual({ family, format: 'gguf', worst: expect.any(Number) });
      expect(worst).toBeLessThanOrEqual(1e-4);
    });
});
