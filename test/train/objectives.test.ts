/**
 * The objectives at the step level: the engine's loss and LoRA gradients for `ce` and for GEM
 * (h linear and logsigmoid) against central finite differences of the float64 reference
 * (test/reference/objectives.ts). GEM holds q = softmax(z/β) and w = σ(0.01(z_v − z_y))
 * constant, so its gradient is that of the surrogate with c̄ frozen at the current θ.
 */
import type { Adapter } from '../../lib/model/adapter.js';
import type { Model } from '../../lib/model/model.js';
import type { Objective } from '../../lib/train/objective.js';
import { buildTrieBatch } from '../../lib/targets/target-set.js';
import type { TinyModel } from '../helpers/tiny-model.js';
import { objectiveSurrogate, type ReferenceObjective } from '../reference/objectives.js';
import { referenceRowLogProbs, type ReferenceLora, type ReferenceWeights } from '../reference/model.js';
import { lcg, randomiseB, relErr, samplePrompts, tensorsOf, tinyTrainingModel } from './tiny-training.js';

async function loraOf(adapter: Adapter): Promise<{ lora: ReferenceLora; keyOf: Map<string, { key: string; matrix: 'A' | 'B' }> }> {
  const A = new Map<string, Float64Array>(), B = new Map<string, Float64Array>();
  const keyOf = new Map<string, { key: string; matrix: 'A' | 'B' }>();
  for (const t of adapter.tensors()) {
    const key = `layers.${t.layer}.${t.module}`;
    const matrix = t.name.endsWith('lora_A') ? 'A' : 'B';
    (matrix === 'A' ? A : B).set(key, Float64Array.from(await adapter.getTensor(t.name)));
    keyOf.set(t.name, { key, matrix });
  }
  return { lora: { scale: adapter.alpha / adapter.rank, A, B }, keyOf };
}

const objectives: { name: string; objective: Objective; reference: ReferenceObjective }[] = [
  { name: 'ce', objective: { kind: 'ce' }, reference: { kind: 'ce' } },
  { name: 'gem, h linear, β = 0.7', objective: { kind: 'gem', beta: 0.7, h: 'linear' }, reference: { kind: 'gem', beta: 0.7, h: 'linear' } },
  { name: 'gem, h logsigmoid, β = 0.4', objective: { kind: 'gem', beta: 0.4, h: 'logsigmoid' }, reference: { kind: 'gem', beta: 0.4, h: 'logsigmoid' } },
];

describe('training objectives on a tiny model', () => {
  let tiny: TinyModel;
  let model: Model;
  let ceGrads: number[];
  beforeAll(async () => {
    ({ tiny, model } = await tinyTrainingModel({ seed: 8, tied: false }));
  });
  afterAll(() => model.dispose());

  it.each(objectives)('gives the loss and LoRA gradients of the reference surrogate ($name)', async ({ objective, reference }) => {
    const trie = buildTrieBatch(samplePrompts(tiny.config.vocabSize));
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, seed: 6 });
    await randomiseB(adapter, 7, 0.5);
    const out = await model.step(trie, adapter, objective);
    const grads = await tensorsOf(adapter, 'grad');

    const ref: ReferenceWeights = { config: tiny.config, tensor: (name) => tiny.weights.get(name)!.data };
    const { lora, keyOf } = await loraOf(adapter);
    const { edgeTokens, edgeWeights } = trie.batch;
    const surrogate = objectiveSurrogate(reference, referenceRowLogProbs(ref, trie.batch, lora), edgeTokens, edgeWeights!);
    const lossAt = () => surrogate(referenceRowLogProbs(ref, trie.batch, lora));
    expect(Math.abs(out.loss - lossAt()) / Math.abs(lossAt())).toBeLessThan(1e-5);

    const r = lcg(99);
    const h = 1e-5;
    const engine: number[] = [], finite: number[] = [];
    for (const t of adapter.tensors()) {
      const { key, matrix } = keyOf.get(t.name)!;
      const values = (matrix === 'A' ? lora.A : lora.B).get(key)!;
      for (let n = 0; n < 2; n++) {
        const i = Math.floor(r() * values.length);
        const saved = values[i];
        values[i] = saved + h;
        const up = lossAt();
        values[i] = saved - h;
        const down = lossAt();
        values[i] = saved;
        finite.push((up - down) / (2 * h));
        engine.push(grads.get(t.name)![i]);
      }
    }
    expect(relErr(engine, finite)).toBeLessThan(1e-5);
    // The objectives differ: GEM's gradient is not CE's.
    if (objective.kind === 'ce') ceGrads = engine;
    else expect(relErr(engine, ceGrads)).toBeGreaterThan(0.05);
    adapter.dispose();
  });
});
