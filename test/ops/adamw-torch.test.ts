/**
 * The training step's optimiser — train()'s clipping coefficient and the adapter's AdamW
 * kernel — against torch.optim.AdamW with torch.nn.utils.clip_grad_norm_ over 20 steps: the
 * committed fixture test/fixtures/reference/adamw-clip.json, made by
 * tools/reference/adamw_reference.py (float64). Gradients alternate between steps whose
 * global norm is clipped to 1 and steps left alone.
 */
import { readFileSync } from 'node:fs';

import { clipCoefficient } from '../../lib/train/train.js';
import { tinyTrainingModel } from '../train/tiny-training.js';
import { relErr } from '../reference/ops.js';

interface Fixture {
  made_by: string;
  settings: { lr: number; betas: [number, number]; eps: number; weight_decay: number; max_norm: number };
  shapes: Record<'lora_A' | 'lora_B', [number, number]>;
  initial: Record<'lora_A' | 'lora_B', number[]>;
  steps: { grads: Record<'lora_A' | 'lora_B', number[]>; gradNorm: number; params: Record<'lora_A' | 'lora_B', number[]> }[];
}

const fixture = JSON.parse(readFileSync(new URL('../fixtures/reference/adamw-clip.json', import.meta.url), 'utf8')) as Fixture;

describe('AdamW with clipping against torch.optim.AdamW over 20 steps (committed fixture)', () => {
  it('clips where torch clips and follows its parameters step by step within 1e-5', async () => {
    expect(fixture.made_by).toBe('tools/reference/adamw_reference.py');
    // One layer whose q_proj is [8, 8]: a rank-2 LoRA pair of the fixture's shapes.
    const { model } = await tinyTrainingModel({ seed: 31, hidden: 8, heads: 2, kvHeads: 1, layers: 1, intermediate: 12, vocab: 20 });
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules: ['q_proj'] });
    const names = { lora_A: '', lora_B: '' };
    for (const t of adapter.tensors()) {
      const kind = t.name.endsWith('lora_A') ? 'lora_A' : 'lora_B';
      expect(t.shape).toEqual(fixture.shapes[kind]);
      names[kind] = t.name;
      await adapter.setTensor(t.name, Float32Array.from(fixture.initial[kind]));
    }
    const s = fixture.settings;
    let clipped = 0;
    const errors: { step: number; kind: string; err: number }[] = [];
    for (const [i, ref] of fixture.steps.entries()) {
      for (const kind of ['lora_A', 'lora_B'] as const) await adapter.setTensor(names[kind], Float32Array.from(ref.grads[kind]), 'grad');
      const gradNorm = await adapter.gradNorm();
      expect(Math.abs(gradNorm - ref.gradNorm) / ref.gradNorm).toBeLessThan(1e-6);
      const gradScale = clipCoefficient(gradNorm, s.max_norm);
      if (gradScale < 1) clipped++;
      await adapter.adamwStep({ lr: s.lr, beta1: s.betas[0], beta2: s.betas[1], eps: s.eps, weightDecay: s.weight_decay, step: i + 1, gradScale });
      for (const kind of ['lora_A', 'lora_B'] as const) errors.push({ step: i + 1, kind, err: relErr(await adapter.getTensor(names[kind]), ref.params[kind]) });
    }
    // Named by step and matrix, so a failure says where the curves part.
    expect(errors.filter((e) => !(e.err < 1e-5))).toEqual([]);
    expect(errors).toHaveLength(2 * fixture.steps.length);
    expect(clipped).toBe(fixture.steps.filter((r) => r.gradNorm > s.max_norm).length);
    expect(clipped).toBeGreaterThan(3);
    expect(clipped).toBeLessThan(fixture.steps.length);
    adapter.dispose();
    model.dispose();
  });
});
