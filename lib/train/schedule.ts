/**
 * Learning-rate schedules, as Hugging Face transformers' `get_constant_schedule_with_warmup`
 * and `get_cosine_schedule_with_warmup` compute them, so a run can be compared with a
 * Trainer run step for step. With k = step − 1 optimiser steps already taken (the k that
 * torch's LambdaLR passes), W warmup steps and T steps in all:
 *
 *   warmup (k < W):   lr · k / W                         (the first step has lr 0, as in HF)
 *   constant:         lr
 *   cosine:           lr · ½ (1 + cos(π · (k − W) / (T − W)))
 *
 * With W = 0 and the constant schedule this is the reference's fixed lr.
 */
import { InvalidArgumentError } from '../errors.js';

/** The learning rate after warmup: constant, or cosine decay to 0 over the run. */
export type ScheduleKind = 'constant' | 'cosine';

export interface ScheduleOptions {
  /** The peak learning rate. */
  lr: number;
  /** Optimiser steps of linear warmup from 0 (default 0). */
  warmupSteps?: number;
  /** After warmup: constant (default) or cosine decay towards 0 at `totalSteps`. */
  schedule?: ScheduleKind;
  /** Optimiser steps of the whole run; the cosine schedule needs it. */
  totalSteps?: number;
}

export function checkSchedule(options: ScheduleOptions): Required<ScheduleOptions> {
  const { lr } = options;
  const warmupSteps = options.warmupSteps ?? 0;
  const schedule = options.schedule ?? 'constant';
  const totalSteps = options.totalSteps ?? 0;
  if (!Number.isFinite(lr) || lr < 0) throw new InvalidArgumentError(`the learning rate must be a finite number ≥ 0, not ${lr}`);
  if (!Number.isSafeInteger(warmupSteps) || warmupSteps < 0) throw new InvalidArgumentError(`warmupSteps must be a whole number ≥ 0, not ${warmupSteps}`);
  if (schedule !== 'constant' && schedule !== 'cosine') throw new InvalidArgumentError(`schedule must be 'constant' or 'cosine', not '${String(schedule)}'`);
  if (schedule === 'cosine' && (!Number.isSafeInteger(totalSteps) || totalSteps <= warmupSteps))
    throw new InvalidArgumentError(`the cosine schedule needs totalSteps greater than warmupSteps (${warmupSteps}), not ${totalSteps}`);
  return { lr, warmupSteps, schedule, totalSteps };
}

/** The learning rate of optimiser step `step` (1-based). */
export function learningRate(step: number, options: ScheduleOptions): number {
  const { lr, warmupSteps, schedule, totalSteps } = checkSchedule(options);
  if (!Number.isSafeInteger(step) || step < 1) throw new InvalidArgumentError(`step must be a whole number ≥ 1, not ${step}`);
  const k = step - 1;
  if (k < warmupSteps) return (lr * k) / warmupSteps;
  if (schedule === 'constant') return lr;
  const progress = (k - warmupSteps) / (totalSteps - warmupSteps);
  return lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
