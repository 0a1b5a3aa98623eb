/**
 * evaluate() on a tiny random model with a real tokenizer: exact figures as the trie forward
 * gives them, sampled figures over the same samples sample() draws, task means over prompts,
 * reproducibility by seed, and an adapter reaching both the exact and the sampled path.
 */
import { evaluate, type EvalTask } from '../../lib/eval/evaluate.js';
import { sample } from '../../lib/eval/sample.js';
import type { Model } from '../../lib/model/model.js';
import { loadTinyChatModel } from './tiny-chat-model.js';

let model: Model;
beforeAll(async () => {
  model = await loadTinyChatModel(5);
});
afterAll(() => model.dispose());

const targets = ['{1}', '{2}', '{3}', '{4}'];
const numbers: EvalTask = {
  name: 'numbers',
  prompts: [
    { request: 'Pick a number from 1 to 4, like {n}.', targets },
    { request: 'Choose one of 1, 2, 3, 4. Answer as {n}.', targets },
  ],
};
const open: EvalTask = { name: 'open', prompts: [{ request: 'Name a fruit like {fruit}.', targets: [] }] };
const options = { samples: 12, maxTokens: 6, seed: 4, bootstrap: 50 };

describe('evaluate', () => {
  it('measures targets exactly and samples every prompt, with task means over prompts', async () => {
    const result = await evaluate(model, [numbers, open], { ...options, keepSamples: true });
    expect(result.model).toBe(model.spec);
    expect(result.adapter).toBe(false);
    expect(result.settings).toEqual({ samples: 12, temperature: 1, topK: 0, topP: 1, maxTokens: 6, seed: 4 });
    expect(result.throughput!.tokens).toBeGreaterThan(0);
    const [task, openTask] = result.tasks;

    const reference = await model.targetDistributions(numbers.prompts);
    task.prompts.forEach((p, i) => {
      expect(p.exact!.entropy).toBe(reference[i].entropy);
      expect(p.exact!.kl).toBe(reference[i].kl);
      expect(p.exact!.outsideMass).toBe(reference[i].outsideMass);
      expect(p.exact!.distribution.map((t) => t.prob)).toEqual(reference[i].targets.map((t) => t.prob));
      expect(p.exact!.expectedCoverage.n).toBe(12);
    });
    const mean = (f: (i: number) => number) => (f(0) + f(1)) / 2;
    expect(task.exact!.kl).toBeCloseTo(mean((i) => reference[i].kl), 12);
    expect(task.exact!.distribution!.map((t) => t.prob)).toEqual(targets.map((_, t) => mean((i) => reference[i].targets[t].prob)));
    expect(task.sampled!.coverage).toBeCloseTo(mean((i) => task.prompts[i].sampled!.coverage), 12);
    expect(task.sampled!.entropy).toBeCloseTo(mean((i) => task.prompts[i].sampled!.entropy), 12);
    expect(task.sampled!.targetCoverage).toBeCloseTo(mean((i) => task.prompts[i].sampled!.targetCoverage!), 12);
    expect(openTask.sampled!.targetCoverage).toBeUndefined();

    for (const [t, p] of [task.prompts[0], openTask.prompts[0]].entries()) {
      const s = p.sampled!;
      expect(s.n).toBe(12);
      expect(s.finishReasons.stop + s.finishReasons.length).toBe(12);
      expect(s.examples).toHaveLength(5);
      const drawn = await sample(model, p.request, { n: 12, maxTokens: 6, seed: 4 });
      expect(s.samples!.map((x) => x.text)).toEqual(drawn.samples.map((x) => x.text));
      expect(s.meanTokens).toBeCloseTo(drawn.generatedTokens / 12, 12);
      if (t === 1) expect(p.exact).toBeUndefined();
    }
    expect(openTask.exact).toBeUndefined();
    expect(openTask.sampled!.n).toBe(12);
  });

  it('gives the same result for the same seed', async () => {
    const a = await evaluate(model, [numbers], options);
    const b = await evaluate(model, [numbers], options);
    delete a.throughput;
    delete b.throughput;
    expect(b).toEqual(a);
  });

  it('evaluates the adapted model when given an adapter', async () => {
    const adapter = await model.createAdapter({ rank: 2, seed: 1 });
    for (const t of adapter.tensors())
      if (t.name.endsWith('lora_B')) await adapter.setTensor(t.name, Float32Array.from({ length: t.shape[0] * t.shape[1] }, (_, i) => Math.sin(i + 1)));
    const base = await evaluate(model, [numbers], { ...options, keepSamples: true });
    const tuned = await evaluate(model, [numbers], { ...options, keepSamples: true, adapter });
    expect(tuned.adapter).toBe(true);
    expect(tuned.tasks[0].exact!.kl).not.toBeCloseTo(base.tasks[0].exact!.kl, 3);
    expect(tuned.tasks[0].prompts[0].sampled!.samples!.map((s) => s.text)).not.toEqual(base.tasks[0].prompts[0].sampled!.samples!.map((s) => s.text));
    const exact = await model.targetDistributions(numbers.prompts, { adapter });
    expect(tuned.tasks[0].prompts[1].exact!.kl).toBe(exact[1].kl);
    adapter.dispose();
  });

  it('says that a prompt without targets needs samples', async () => {
    await expect(evaluate(model, [open], {})).rejects.toThrow(/open.*samples/);
  });
});
