/**
 * Our adapters in Hugging Face PEFT, from a committed fixture (always runs, no Python): PEFT
 * loading an adapter we saved onto transformers' copy of the suite's tiny Llama gives the
 * log-probabilities we give, and an adapter PEFT itself wrote (rsLoRA, bf16) loads onto our
 * model with the log-probabilities PEFT gave. Made by tools/reference/peft_fixture.ts from
 * peft-fixture-spec.ts; the live check on SmolLM2 is peft-python.test.ts (DIFFUSE_LIVE_PYTHON=1).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { saveAdapter } from '../../lib/adapters/peft.js';
import type { Adapter } from '../../lib/model/adapter.js';
import type { Model } from '../../lib/model/model.js';
import { buildTrieBatch, sequenceLogProbs } from '../../lib/targets/target-set.js';
import { promptOf, randomiseB, tinyTrainingModel } from '../train/tiny-training.js';
import { peftFixture as spec } from './peft-fixture-spec.js';

const fixtureDir = new URL('../fixtures/reference/peft/', import.meta.url).pathname;
const fixture = JSON.parse(readFileSync(join(fixtureDir, 'logprobs.json'), 'utf8')) as {
  made_by: string;
  ours_sha256: string;
  base_logprobs: number[];
  ours_logprobs: number[];
  peft_adapter_logprobs: number[];
};

async function logprobs(model: Model, adapter?: Adapter): Promise<number[]> {
  const prompts = spec.sequences.map(([prompt, target], i) => promptOf(prompt, [[target]], [1], `s${i}`));
  const trie = buildTrieBatch(prompts);
  const { edgeLogProbs } = await model.native.forward(trie.batch, adapter?.native);
  return sequenceLogProbs(trie, edgeLogProbs).map((p) => p[0]);
}

const within = (ours: number[], theirs: number[], tolerance: number) => ours.map((x, i) => Math.abs(x - theirs[i])).filter((d) => !(d <= tolerance));

describe('PEFT on our adapters and ours on PEFT’s (committed fixture from transformers + peft)', () => {
  let model: Model;
  let dir: string;
  beforeAll(async () => {
    ({ model } = await tinyTrainingModel(spec.model));
    dir = await mkdtemp(join(tmpdir(), 'diffuse-peft-fixture-'));
  });
  afterAll(async () => {
    model.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('gives transformers’ base log-probabilities, and PEFT’s with the very adapter we save', async () => {
    expect(fixture.made_by).toBe('tools/reference/peft_fixture.ts');
    expect(within(await logprobs(model), fixture.base_logprobs, 1e-4)).toEqual([]);
    const adapter = await model.createAdapter(spec.ours.adapter);
    await randomiseB(adapter, spec.ours.bSeed, spec.ours.bScale);
    await saveAdapter(adapter, join(dir, 'ours'));
    expect(createHash('sha256').update(await readFile(join(dir, 'ours', 'adapter_model.safetensors'))).digest('hex')).toBe(fixture.ours_sha256);
    const ours = await logprobs(model, adapter);
    expect(within(ours, fixture.ours_logprobs, 1e-4)).toEqual([]);
    // The adapter matters: matching with it is not matching without it.
    expect(Math.max(...ours.map((x, i) => Math.abs(x - fixture.base_logprobs[i])))).toBeGreaterThan(0.1);
    adapter.dispose();
  });

  it('loads the adapter PEFT wrote (rsLoRA, bf16, three modules) with PEFT’s log-probabilities', async () => {
    const theirs = await model.loadAdapter(join(fixtureDir, 'peft-adapter'));
    expect(theirs.targetModules).toEqual(['q_proj', 'v_proj', 'down_proj']);
    const ours = await logprobs(model, theirs);
    expect(within(ours, fixture.peft_adapter_logprobs, 1e-4)).toEqual([]);
    expect(Math.max(...ours.map((x, i) => Math.abs(x - fixture.base_logprobs[i])))).toBeGreaterThan(0.1);
    theirs.dispose();
  });
});
