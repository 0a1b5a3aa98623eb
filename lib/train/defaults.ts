/**
 * The defaults of training, defined once: the paper's reference loop (AdamW lr 5e-5, eps 1e-5,
 * betas (0.9, 0.999), weight decay 0.01, clipping at 1.0, up to 50 passes, γ = 0.2), GEM's
 * β = 0.7 (Li et al.) and PEFT's LoRA (r = 4, α = 8). Configs, flags and the API all read these.
 */
import type { ResolvedTrainOptions } from './train.js';

/** GEM's defaults: q = softmax(z / β) with β = 0.7, and h linear. */
export const gemDefaults = { beta: 0.7, h: 'linear' } as const;

/** The adapter's defaults: rank 4 (the paper's), alpha 8 (PEFT's), seed 0. */
export const loraDefaults = { rank: 4, alpha: 8, seed: 0 } as const;

/** Every training option's default: the reference loop's hyper-parameters. */
export const trainDefaults: Readonly<ResolvedTrainOptions> = Object.freeze({
  nIters: 50,
  lr: 5e-5,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-5,
  weightDecay: 0.01,
  maxGradNorm: 1,
  warmupSteps: 0,
  schedule: 'constant',
  promptsPerStep: 1,
  seed: 0,
  earlyStop: false,
  gamma: 0.2,
  objective: Object.freeze({ kind: 'ce' as const }),
});
