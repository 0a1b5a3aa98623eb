/**
 * Our exact target log-probabilities on the default model against HF transformers + PyTorch
 * (the paper's stack) loading the same GGUF: tools/reference/target_logprobs.py wrote the
 * fixture, with the reference's target convention (the full chat's tokens after the prompt's).
 */
import { readFile } from 'node:fs/promises';

import { defaultModelSource } from '../../lib/model/default-model.js';
import { loadModel } from '../../lib/model/load.js';
import type { Model } from '../../lib/model/model.js';
import { Progress } from '../../lib/progress.js';
import type { TargetRequest } from '../../lib/targets/target-set.js';

interface FixtureTask {
  file: string;
  prompt_token_ids: number[];
  targets: { target: string; token_ids: number[]; token_logprobs: number[]; logprob: number }[];
}

const fixtureUrl = new URL('../fixtures/reference/smollm2-q4_1-logprobs.json', import.meta.url);
const promptsUrl = new URL('../../data/tasks/reference/prompts/', import.meta.url);

describe('target log-probabilities on SmolLM2 against transformers', () => {
  let model: Model;
  let tasks: FixtureTask[];
  let fixture: { model: { sha256: string }; tasks: FixtureTask[] };
  beforeAll(async () => {
    fixture = JSON.parse(await readFile(fixtureUrl, 'utf8'));
    tasks = fixture.tasks;
    model = await loadModel('smollm2-135m-instruct', { device: 'cpu', progress: new Progress({ mode: 'silent' }) });
  });
  afterAll(() => model?.dispose());

  it('is a fixture of the pinned model, internally consistent, covering the RNG task and others', () => {
    expect(fixture.model.sha256).toBe(defaultModelSource.sha256);
    expect(tasks.map((t) => t.file)).toEqual(expect.arrayContaining(['numbers/rng-0.json', 'fruits/fruit-0.json']));
    for (const task of tasks)
      for (const t of task.targets) {
        expect(t.token_logprobs).toHaveLength(t.token_ids.length);
        expect(t.logprob).toBeCloseTo(t.token_logprobs.reduce((a, b) => a + b, 0), 10);
        for (const id of [...t.token_ids, ...task.prompt_token_ids]) expect(id >= 0 && id < 49152).toBe(true);
      }
  });

  it('gives every target the same tokens and a sequence log-prob within 2e-3 nats', async () => {
    const worst: Record<string, number> = {};
    for (const task of tasks) {
      const request = JSON.parse(await readFile(new URL(task.file, promptsUrl), 'utf8')) as TargetRequest;
      const [prepared] = model.prepare([request]);
      expect(prepared.promptTokens).toEqual(task.prompt_token_ids);
      const distribution = await model.targetLogProbs(request);
      const ours = new Map(distribution.targets.map((t) => [t.target, t]));
      worst[task.file] = 0;
      for (const reference of task.targets) {
        const t = ours.get(reference.target)!;
        expect(t.tokens).toEqual(reference.token_ids);
        worst[task.file] = Math.max(worst[task.file], Math.abs(t.logprob - reference.logprob));
      }
    }
    // Named per task, so a failure says which task drifted and by how much.
    expect(Object.entries(worst).filter(([, w]) => !(w <= 2e-3))).toEqual([]);
    expect(Object.keys(worst)).toHaveLength(tasks.length);
  });
});
