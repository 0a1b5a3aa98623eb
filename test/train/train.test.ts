/**
 * The training loop against a float64 re-enactment of the paper's reference loop
 * (src/search.py `continuous`: per step, clip_grad_norm_ then torch's AdamW), fed the engine's
 * gradients at the reference's own parameters; and the loop's bookkeeping: pass order, early
 * stop, logs, cancellation.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Adapter } from '../../lib/model/adapter.js';
import type { Model } from '../../lib/model/model.js';
import type { Objective } from '../../lib/train/objective.js';
import type { PreparedPrompt } from '../../lib/targets/target-set.js';
import { passOrder } from '../../lib/train/order.js';
import { learningRate } from '../../lib/train/schedule.js';
import { train, type PassRecord, type StepRecord } from '../../lib/train/train.js';
import { randomiseB, relErr, samplePrompts, tensorsOf, tinyTrainingModel } from './tiny-training.js';

interface ReferenceSettings {
  lr: (step: number) => number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  maxGradNorm: number;
  objective?: Objective;
}

/**
 * Replays the steps `records` name, in float64: at each step the engine gives the gradient at
 * the reference's parameters (rounded to f32), averaged over the step's prompts; then
 * torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW as written in PyTorch:
 *   g ← g · min(1, c / (‖g‖ + 1e−6));  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
 *   θ ← θ(1 − lr·λ) − lr · (m / (1−β₁ᵗ)) / (√v / √(1−β₂ᵗ) + ε)
 */
async function referenceRun(
  model: Model,
  mirror: Adapter,
  initial: Map<string, Float32Array>,
  prompts: PreparedPrompt[],
  records: StepRecord[],
  s: ReferenceSettings,
): Promise<{ params: Map<string, Float64Array>; losses: number[]; norms: number[] }> {
  const params = new Map([...initial].map(([k, v]) => [k, Float64Array.from(v)]));
  const m = new Map([...initial].map(([k, v]) => [k, new Float64Array(v.length)]));
  const v2 = new Map([...initial].map(([k, v]) => [k, new Float64Array(v.length)]));
  const losses: number[] = [], norms: number[] = [];
  for (const [i, record] of records.entries()) {
    const t = i + 1;
    const group = record.prompts.map((name) => prompts.find((p) => p.request === name)!);
    for (const [name, p] of params) await mirror.setTensor(name, Float32Array.from(p));
    await mirror.zeroGrad();
    const out = await model.step(group, mirror, s.objective ?? { kind: 'ce' });
    let loss = 0;
    group.forEach((p, j) => p.sequences.forEach((seq, k) => (loss -= seq.weight * out.sequenceLogProbs[j][k])));
    losses.push(loss);
    const grads = new Map<string, Float64Array>();
    let sq = 0;
    for (const name of params.keys()) {
      const g = Float64Array.from(await mirror.getTensor(name, 'grad'), (x) => x / group.length);
      for (const x of g) sq += x * x;
      grads.set(name, g);
    }
    const norm = Math.sqrt(sq);
    norms.push(norm);
    const coef = Math.min(1, s.maxGradNorm / (norm + 1e-6));
    const lr = s.lr(t);
    for (const [name, p] of params) {
      const g = grads.get(name)!, mm = m.get(name)!, vv = v2.get(name)!;
      for (let j = 0; j < p.length; j++) {
        const gj = g[j] * coef;
        mm[j] = s.beta1 * mm[j] + (1 - s.beta1) * gj;
        vv[j] = s.beta2 * vv[j] + (1 - s.beta2) * gj * gj;
        p[j] = p[j] * (1 - lr * s.weightDecay) - (lr / (1 - s.beta1 ** t)) * (mm[j] / (Math.sqrt(vv[j]) / Math.sqrt(1 - s.beta2 ** t) + s.eps));
      }
    }
  }
  return { params, losses, norms };
}

function flat(tensors: Map<string, ArrayLike<number>>): number[] {
  return [...tensors.keys()].sort().flatMap((k) => Array.from(tensors.get(k)!));
}

describe('the training loop', () => {
  let model: Model;
  let prompts: PreparedPrompt[];
  beforeAll(async () => {
    ({ model } = await tinyTrainingModel({ seed: 3 }));
    prompts = samplePrompts(model.config.vocabSize);
  });
  afterAll(() => model.dispose());

  async function freshAdapter(seed = 1): Promise<Adapter> {
    const adapter = await model.createAdapter({ rank: 3, alpha: 6, seed });
    await randomiseB(adapter, 2);
    return adapter;
  }

  it('takes the reference loop’s steps with its default hyper-parameters', async () => {
    const adapter = await freshAdapter();
    const initial = await tensorsOf(adapter);
    const records: StepRecord[] = [];
    const result = await train(model, adapter, prompts, { nIters: 3, names: prompts.map((p) => p.request), onStep: (r) => void records.push(r) });
    expect(result).toMatchObject({ stopped: 'completed', steps: 9, passes: 3 });
    expect(records.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(records.every((r) => r.lr === 5e-5)).toBe(true);

    const mirror = await freshAdapter(9);
    const ref = await referenceRun(model, mirror, initial, prompts, records, { lr: () => 5e-5, beta1: 0.9, beta2: 0.999, eps: 1e-5, weightDecay: 0.01, maxGradNorm: 1 });
    expect(relErr(records.map((r) => r.loss), ref.losses)).toBeLessThan(1e-5);
    expect(relErr(records.map((r) => r.gradNorm), ref.norms)).toBeLessThan(1e-5);
    expect(relErr(flat(await tensorsOf(adapter)), flat(ref.params))).toBeLessThan(1e-6);
    // The update moved the parameters by far more than the tolerance.
    expect(relErr(flat(initial), flat(ref.params))).toBeGreaterThan(1e-4);
    adapter.dispose();
    mirror.dispose();
  });

  it('clips, warms up, decays and averages several prompts per step as the reference would', async () => {
    const adapter = await freshAdapter();
    const initial = await tensorsOf(adapter);
    const records: StepRecord[] = [];
    const settings = { lr: 2e-2, betas: [0.8, 0.99] as [number, number], eps: 1e-6, weightDecay: 0.1, warmupSteps: 2, schedule: 'cosine' as const };
    // Steps of 2 prompts: 2 steps a pass (the second with one prompt), 8 in all.
    await train(model, adapter, prompts, { ...settings, nIters: 4, promptsPerStep: 2, maxGradNorm: 4.5, names: prompts.map((p) => p.request), onStep: (r) => void records.push(r) });
    expect(records.map((r) => r.prompts.length)).toEqual([2, 1, 2, 1, 2, 1, 2, 1]);
    // transformers' cosine schedule with warmup, written out: k = step − 1 steps already taken.
    const hfLr = (step: number) => {
      const k = step - 1, W = 2, T = 8;
      return k < W ? (2e-2 * k) / W : 2e-2 * 0.5 * (1 + Math.cos((Math.PI * (k - W)) / (T - W)));
    };
    for (const r of records) expect(r.lr).toBeCloseTo(hfLr(r.step), 15);
    const mirror = await freshAdapter(9);
    const ref = await referenceRun(model, mirror, initial, prompts, records, { ...settings, lr: hfLr, beta1: 0.8, beta2: 0.99, maxGradNorm: 4.5 });
    // Some steps were clipped, some were not.
    expect(ref.norms.some((n) => n > 4.5)).toBe(true);
    expect(ref.norms.some((n) => n < 4.5)).toBe(true);
    expect(relErr(records.map((r) => r.gradNorm), ref.norms)).toBeLessThan(1e-5);
    expect(relErr(flat(await tensorsOf(adapter)), flat(ref.params))).toBeLessThan(1e-5);
    adapter.dispose();
    mirror.dispose();
  });

  it('trains GEM through the same loop, recording its objective beside the cross-entropy', async () => {
    const adapter = await freshAdapter();
    const initial = await tensorsOf(adapter);
    const records: StepRecord[] = [];
    const objective = { kind: 'gem' as const, beta: 0.6, h: 'logsigmoid' as const };
    await train(model, adapter, prompts, { nIters: 2, lr: 1e-3, objective, names: prompts.map((p) => p.request), onStep: (r) => void records.push(r) });
    const mirror = await freshAdapter(9);
    const ref = await referenceRun(model, mirror, initial, prompts, records, { lr: () => 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-5, weightDecay: 0.01, maxGradNorm: 1, objective });
    expect(relErr(records.map((r) => r.loss), ref.losses)).toBeLessThan(1e-5);
    expect(relErr(flat(await tensorsOf(adapter)), flat(ref.params))).toBeLessThan(1e-5);
    for (const r of records) expect(Math.abs(r.objectiveLoss - r.loss)).toBeGreaterThan(1e-3);
    adapter.dispose();
    mirror.dispose();
  });

  it('visits every prompt once a pass, in the order (seed, pass) gives', async () => {
    const adapter = await freshAdapter();
    const names = prompts.map((p) => p.request);
    const records: StepRecord[] = [];
    await train(model, adapter, prompts, { nIters: 4, seed: 7, names, onStep: (r) => void records.push(r) });
    for (let pass = 0; pass < 4; pass++) {
      const visited = records.filter((r) => r.pass === pass + 1).flatMap((r) => r.prompts);
      expect(visited).toEqual(passOrder(7, pass, 3).map((i) => names[i]));
    }
    adapter.dispose();
  });

  it('sums a pass’s losses as the reference does and stops early below (1 + γ) · Σ H(p*)', async () => {
    const adapter = await freshAdapter();
    const steps: StepRecord[] = [];
    const passes: PassRecord[] = [];
    const never = await train(model, adapter, prompts, { nIters: 2, earlyStop: true, gamma: 0, onStep: (r) => void steps.push(r), onPass: (r) => void passes.push(r) });
    expect(never.stopped).toBe('completed');
    const entropy = (w: number[]) => -w.reduce((s, x) => s + x * Math.log(x), 0);
    const optimal = prompts.reduce((s, p) => s + entropy(p.weights), 0);
    for (const p of passes) {
      expect(p.optimalLoss).toBeCloseTo(optimal, 12);
      expect(p.loss).toBeCloseTo(steps.filter((r) => r.pass === p.pass).reduce((s, r) => s + r.loss, 0), 12);
      expect(p.loss).toBeGreaterThan(optimal);
    }
    // With γ just above the first pass's ratio, training stops after that pass.
    const threshold = passes[0].loss / optimal - 1 + 1e-9;
    const fresh = await freshAdapter();
    const early = await train(model, fresh, prompts, { nIters: 5, earlyStop: true, gamma: threshold });
    expect(early).toMatchObject({ stopped: 'early', passes: 1, steps: 3 });
    expect(early.lastPass!.loss).toBe(passes[0].loss);
    adapter.dispose();
    fresh.dispose();
  });

  it('writes every record to the JSONL log, and finishes the current step when aborted', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'diffuse-train-'));
    const adapter = await freshAdapter();
    const controller = new AbortController();
    const records: (StepRecord | PassRecord)[] = [];
    const result = await train(model, adapter, prompts, {
      nIters: 3,
      logFile: join(dir, 'logs', 'train.jsonl'),
      signal: controller.signal,
      onStep: (r) => {
        records.push(r);
        if (r.step === 5) controller.abort();
      },
      onPass: (r) => void records.push(r),
    });
    expect(result).toMatchObject({ stopped: 'signal', steps: 5, passes: 1 });
    const lines = (await readFile(join(dir, 'logs', 'train.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toEqual(JSON.parse(JSON.stringify(records)));
    expect(lines.map((l) => l.type)).toEqual(['step', 'step', 'step', 'pass', 'step', 'step']);
    for (const l of lines.filter((x) => x.type === 'step')) {
      expect(l.positions).toBeGreaterThan(0);
      expect(l.positionsPerSecond).toBeGreaterThan(0);
      expect(l.objectiveLoss).toBe(l.loss);
    }
    adapter.dispose();
    await rm(dir, { recursive: true });
  });

  it('rejects bad options with messages that say what to give', async () => {
    const adapter = await freshAdapter();
    await expect(train(model, adapter, [], {})).rejects.toThrow(/at least one prompt/);
    await expect(train(model, adapter, prompts, { nIters: 0 })).rejects.toThrow(/nIters must be a whole number ≥ 1/);
    await expect(train(model, adapter, prompts, { betas: [0.9, 1] })).rejects.toThrow(/β₂ must be in \[0, 1\)/);
    await expect(train(model, adapter, prompts, { names: ['x'] })).rejects.toThrow(/1 names given for 3 prompts/);
    await expect(train(model, adapter, prompts, { objective: { kind: 'gem', beta: -1 } })).rejects.toThrow(/beta must be a positive number/);
    await expect(train(model, adapter, prompts, { resume: true })).rejects.toThrow(/needs checkpointDir/);
    adapter.dispose();
  });
});

describe('learning-rate schedules and pass order', () => {
  it('follows transformers’ warmup and cosine formulas', () => {
    expect([1, 2, 3, 4, 5].map((s) => learningRate(s, { lr: 1, warmupSteps: 3 }))).toEqual([0, 1 / 3, 2 / 3, 1, 1]);
    const cos = [1, 2, 3, 4, 5, 6].map((s) => learningRate(s, { lr: 2, warmupSteps: 1, schedule: 'cosine', totalSteps: 5 }));
    expect(cos[0]).toBe(0);
    expect(cos[1]).toBe(2);
    expect(cos[3]).toBeCloseTo(1, 14);
    expect(cos[5]).toBe(0);
    for (let i = 2; i < cos.length; i++) expect(cos[i]).toBeLessThan(cos[i - 1]);
    expect(() => learningRate(1, { lr: 1, schedule: 'cosine' })).toThrow(/needs totalSteps/);
  });

  it('gives each (seed, pass) its own fixed permutation', () => {
    const a = passOrder(3, 0, 50);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(passOrder(3, 0, 50)).toEqual(a);
    expect(passOrder(3, 1, 50)).not.toEqual(a);
    expect(passOrder(4, 0, 50)).not.toEqual(a);
    // Every prompt lands in the first place about equally often over many passes.
    const first = new Array<number>(5).fill(0);
    for (let pass = 0; pass < 5000; pass++) first[passOrder(1, pass, 5)[0]]++;
    for (const count of first) expect(Math.abs(count - 1000)).toBeLessThan(120);
  });
});
