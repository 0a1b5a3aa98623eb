/**
 * The training loop: the paper's reference (y0mingzhang/diffuse-distributions,
 * src/search.py `continuous`) in TypeScript, with the engine doing each step.
 *
 *   for pass in 1..n_iters:
 *     shuffle the prompts
 *     for each prompt:  loss = −Σ_y p*(y) log pθ(y|x);  backward   (one engine step: the trie
 *                       holds every target, which is the reference's gradient accumulated
 *                       over its batches of 32)
 *                       clip_grad_norm_(1.0);  AdamW step (lr 5e-5, eps 1e-5, betas
 *                       (0.9, 0.999), weight decay 0.01);  zero_grad
 *     stop early when Σ_prompts loss ≤ (1 + γ) Σ_prompts H(p*)
 *
 * Additions, all off by default: warmup and a cosine schedule (schedule.ts), several prompts
 * per optimiser step (one engine step over their tries; the gradient is their mean, as the
 * reference's compute_loss averages over the prompts it is given), the GEM objective, JSONL
 * logs, checkpoints with exact resume (checkpoint.ts), and cancellation.
 *
 * Clipping is torch's: with n = ‖g‖₂ over all adapter gradients, g ← g · min(1, c / (n + 1e−6)),
 * folded into the AdamW kernel's gradient scale. Pass k's prompt order is a pure function of
 * (seed, k) (order.ts), so a resumed run takes the same steps as an uninterrupted one.
 */
import { stat, truncate } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

import { appendLine, makeDirectory } from '../atomic-write.js';
import { DiffuseError, InvalidArgumentError } from '../errors.js';
import type { Adapter } from '../model/adapter.js';
import { entropy } from '../eval/stats.js';
import type { Model } from '../model/model.js';
import type { PreparedPrompt, TrieBatch } from '../targets/target-set.js';
import { loadCheckpointInto, promptsFingerprint, readCheckpoint, saveCheckpoint, type CheckpointState, type MatchedOptions } from './checkpoint.js';
import { trainDefaults } from './defaults.js';
import { resolveObjective, type Objective } from './objective.js';
import { passOrder } from './order.js';
import { checkSchedule, learningRate, type ScheduleKind } from './schedule.js';

/** The training loop's settings; every one has the reference loop's default (trainDefaults). */
export interface TrainOptions {
  /** Passes over all prompts (the reference's `n_iters`; default 50). */
  nIters?: number;
  /** AdamW's peak learning rate (default 5e-5). */
  lr?: number;
  /** AdamW's β₁, β₂ (default [0.9, 0.999]). */
  betas?: [number, number];
  /** AdamW's ε (default 1e-5, the reference's). */
  eps?: number;
  /** AdamW's decoupled weight decay (default 0.01, torch's default). */
  weightDecay?: number;
  /** Global gradient-norm clipping threshold (default 1.0); Infinity turns clipping off. */
  maxGradNorm?: number;
  /** Optimiser steps of linear warmup from 0 (default 0). */
  warmupSteps?: number;
  /** The learning rate after warmup: constant (default) or cosine decay over the whole run. */
  schedule?: ScheduleKind;
  /** Prompts per optimiser step (default 1, the reference). */
  promptsPerStep?: number;
  /** Seeds the prompt order of every pass (default 0). */
  seed?: number;
  /** Stop after a pass whose summed loss is ≤ (1 + gamma) · Σ H(p*) (default false). */
  earlyStop?: boolean;
  /** The early-stop slack γ (default 0.2). */
  gamma?: number;
  /** `ce` (default; the paper's loss) or `gem` with its β and h. */
  objective?: Objective;
  /** A name per prompt for the records (default "#<index>"). */
  names?: string[];
  /** Called after every optimiser step. */
  onStep?: (record: StepRecord) => void | Promise<void>;
  /** Called after every complete pass. */
  onPass?: (record: PassRecord) => void | Promise<void>;
  /** Appends every record as one JSON line to this file (created with its directory). */
  logFile?: string;
  /** When aborted, the current step finishes, a checkpoint is saved, and train returns { stopped: 'signal' }. */
  signal?: AbortSignal;
  /** Where checkpoints go: one after every pass, every `checkpointEvery` steps, and when stopping. */
  checkpointDir?: string;
  /** Also checkpoint every this many optimiser steps (default: only at pass ends and stops). */
  checkpointEvery?: number;
  /** Checkpoints kept in checkpointDir, newest first (default 1). */
  keepCheckpoints?: number;
  /**
   * Continue from a checkpoint: true for the latest in `checkpointDir` (a fresh start if there
   * is none), or a checkpoint's path. The adapter's parameters and AdamW moments are replaced
   * by the checkpoint's; the options that shape the loss curve must match it.
   */
  resume?: boolean | string;
  /** `base_model_name_or_path` written into the checkpoints' adapter_config.json (default null). */
  baseModel?: string | null;
}

/** One optimiser step, as onStep and the JSONL log get it. */
export interface StepRecord {
  type: 'step';
  /** 1-based pass. */
  pass: number;
  /** 1-based optimiser step, counted over the whole run. */
  step: number;
  /** The names of the prompts of this step. */
  prompts: string[];
  /** Σ over this step's prompts of −Σ_y p*(y) log pθ(y|x), before the update. */
  loss: number;
  /** Σ over this step's prompts of H(p*), the least the loss can be. */
  optimalLoss: number;
  /** The value the objective's gradient is taken of (equals `loss` for ce). */
  objectiveLoss: number;
  /** ‖g‖₂ of the step's gradient before clipping. */
  gradNorm: number;
  /** The learning rate of this step. */
  lr: number;
  /** Engine rows (prompt positions and internal trie nodes) of this step. */
  positions: number;
  positionsPerSecond: number;
  /** Seconds of training so far, over every resumed segment of the run. */
  elapsed: number;
}

/** One complete pass over the prompts, as onPass and the JSONL log get it. */
export interface PassRecord {
  type: 'pass';
  pass: number;
  /** Optimiser steps so far. */
  step: number;
  /** Σ over the pass's prompts of their losses (each before its own update), as the reference sums it. */
  loss: number;
  optimalLoss: number;
  /** The early-stop threshold (1 + γ) · optimalLoss. */
  earlyStopAt: number;
  elapsed: number;
}

/** How a training run ended. */
export interface TrainResult {
  stopped: 'completed' | 'early' | 'signal';
  /** Optimiser steps taken over the whole run. */
  steps: number;
  /** Complete passes over the whole run. */
  passes: number;
  /** The last complete pass. */
  lastPass?: PassRecord;
  /** The last checkpoint saved, if any. */
  checkpoint?: string;
  elapsed: number;
}

/** Every option with its default, checked. */
export interface ResolvedTrainOptions {
  nIters: number;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  maxGradNorm: number;
  warmupSteps: number;
  schedule: ScheduleKind;
  promptsPerStep: number;
  seed: number;
  earlyStop: boolean;
  gamma: number;
  objective: Objective;
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new InvalidArgumentError(`${name} must be a whole number ≥ 1, not ${value}`);
  return value;
}

function finiteAtLeast(name: string, value: number, min: number, strict: boolean): number {
  if (!Number.isFinite(value) || value < min || (strict && value === min))
    throw new InvalidArgumentError(`${name} must be a finite number ${strict ? '>' : '≥'} ${min}, not ${value}`);
  return value;
}

export function resolveTrainOptions(options: TrainOptions): ResolvedTrainOptions {
  const d = trainDefaults;
  const [beta1, beta2] = options.betas ?? [d.beta1, d.beta2];
  for (const [name, b] of [['β₁', beta1], ['β₂', beta2]] as const)
    if (!(b >= 0 && b < 1)) throw new InvalidArgumentError(`AdamW ${name} must be in [0, 1), not ${b}`);
  const maxGradNorm = options.maxGradNorm ?? d.maxGradNorm;
  if (!(maxGradNorm > 0)) throw new InvalidArgumentError(`maxGradNorm must be > 0 (Infinity turns clipping off), not ${maxGradNorm}`);
  const objective = resolveObjective(options.objective ?? d.objective);
  const resolved: ResolvedTrainOptions = {
    nIters: positiveInteger('nIters', options.nIters ?? d.nIters),
    lr: finiteAtLeast('lr', options.lr ?? d.lr, 0, false),
    beta1,
    beta2,
    eps: finiteAtLeast('eps', options.eps ?? d.eps, 0, true),
    weightDecay: finiteAtLeast('weightDecay', options.weightDecay ?? d.weightDecay, 0, false),
    maxGradNorm,
    warmupSteps: options.warmupSteps ?? d.warmupSteps,
    schedule: options.schedule ?? d.schedule,
    promptsPerStep: positiveInteger('promptsPerStep', options.promptsPerStep ?? d.promptsPerStep),
    seed: options.seed ?? d.seed,
    earlyStop: options.earlyStop ?? d.earlyStop,
    gamma: finiteAtLeast('gamma', options.gamma ?? d.gamma, 0, false),
    objective,
  };
  if (!Number.isSafeInteger(resolved.seed) || resolved.seed < 0) throw new InvalidArgumentError(`seed must be a whole number ≥ 0, not ${resolved.seed}`);
  checkSchedule({ lr: resolved.lr, warmupSteps: resolved.warmupSteps, schedule: resolved.schedule, totalSteps: resolved.schedule === 'cosine' ? Number.MAX_SAFE_INTEGER : 0 });
  return resolved;
}

/** torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (‖g‖ + 1e−6)). */
export function clipCoefficient(gradNorm: number, maxGradNorm: number): number {
  const clip = maxGradNorm / (gradNorm + 1e-6);
  return clip < 1 ? clip : 1;
}

/** −Σ p*(y) log pθ(y|x) over the prompts of a trie batch, from per-sequence log-probabilities. */
function crossEntropy(trie: TrieBatch, sequenceLogProbs: number[][]): number {
  let loss = 0;
  trie.prompts.forEach((p, i) => p.sequences.forEach((s, j) => (loss -= s.weight * sequenceLogProbs[i][j])));
  return loss;
}

/** The options a checkpoint records and a resume must repeat, as the loss curve depends on them. */
function matchedOptions(o: ResolvedTrainOptions, totalSteps: number): MatchedOptions {
  return {
    lr: o.lr,
    beta1: o.beta1,
    beta2: o.beta2,
    eps: o.eps,
    weightDecay: o.weightDecay,
    maxGradNorm: o.maxGradNorm === Infinity ? null : o.maxGradNorm,
    warmupSteps: o.warmupSteps,
    schedule: o.schedule,
    totalSteps: o.schedule === 'cosine' ? totalSteps : null,
    promptsPerStep: o.promptsPerStep,
    seed: o.seed,
    objective: o.objective,
  };
}

/**
 * Trains `adapter` on `prompts` (prepared by `model.prepare`). Returns when every pass is done,
 * on early stop, or after the step during which `signal` was aborted.
 */
export async function train(model: Model, adapter: Adapter, prompts: PreparedPrompt[], options: TrainOptions = {}): Promise<TrainResult> {
  const o = resolveTrainOptions(options);
  if (!Array.isArray(prompts) || prompts.length === 0) throw new InvalidArgumentError('train needs at least one prompt');
  const names = options.names ?? prompts.map((_, i) => `#${i}`);
  if (names.length !== prompts.length) throw new InvalidArgumentError(`${names.length} names given for ${prompts.length} prompts; give one per prompt`);
  const keep = positiveInteger('keepCheckpoints', options.keepCheckpoints ?? 1);
  const every = options.checkpointEvery === undefined ? undefined : positiveInteger('checkpointEvery', options.checkpointEvery);
  if (options.resume === true && options.checkpointDir === undefined) throw new InvalidArgumentError('resume: true needs checkpointDir, where to look for the latest checkpoint');

  const N = o.promptsPerStep;
  const stepsPerPass = Math.ceil(prompts.length / N);
  const totalSteps = o.nIters * stepsPerPass;
  const schedule = { lr: o.lr, warmupSteps: o.warmupSteps, schedule: o.schedule, totalSteps };
  checkSchedule(schedule);
  const matched = matchedOptions(o, totalSteps);
  const fingerprint = promptsFingerprint(prompts);
  const optimal = prompts.map((p) => entropy(p.weights));
  const singleTries = N === 1 ? prompts.map((p) => model.trieBatch([p])) : undefined;

  const logFile = options.logFile === undefined ? null : resolve(options.logFile);
  let state: CheckpointState = { step: 0, pass: 0, position: 0, passLoss: 0, passOptimalLoss: 0, elapsed: 0, logFile, logBytes: 0 };
  let lastPass: PassRecord | undefined;
  let checkpoint: string | undefined;
  let savedStep = -1;
  if (!options.resume && options.checkpointDir !== undefined && (await readCheckpoint(options.checkpointDir, { optional: true })))
    throw new InvalidArgumentError(
      `${options.checkpointDir} already holds a training checkpoint; pass resume: true to continue that run, or give an empty checkpoint directory`,
    );
  if (options.resume) {
    const found = await readCheckpoint(options.resume === true ? options.checkpointDir! : options.resume, { optional: options.resume === true });
    if (found) {
      if (options.checkpointDir !== undefined && dirname(found.dir) === resolve(options.checkpointDir)) savedStep = found.trainer.state.step;
      state = await loadCheckpointInto(found, adapter, { options: matched, fingerprint, promptCount: prompts.length });
      lastPass = found.trainer.lastPass;
      checkpoint = found.dir;
      // Lines logged after the checkpoint are redone: drop them so the log is one curve.
      if (logFile !== null && state.logFile === logFile) await truncateLog(logFile, state.logBytes);
    }
  }
  state.logFile = logFile;
  if (logFile !== null) {
    await makeDirectory(dirname(logFile));
    state.logBytes = (await stat(logFile).catch(() => undefined))?.size ?? 0;
  }

  const segmentStart = performance.now();
  const elapsed = () => state.elapsed + (performance.now() - segmentStart) / 1000;
  const log = async (record: StepRecord | PassRecord) => {
    if (logFile !== null) {
      state.logBytes += await appendLine(logFile, JSON.stringify(record) + '\n');
    }
  };
  const save = async () => {
    if (options.checkpointDir === undefined || savedStep === state.step) return;
    checkpoint = await saveCheckpoint(options.checkpointDir, adapter, {
      state: { ...state, elapsed: elapsed() },
      options: matched,
      nIters: o.nIters,
      fingerprint,
      promptCount: prompts.length,
      lastPass,
      baseModel: options.baseModel ?? null,
      keep,
    });
    savedStep = state.step;
  };
  const result = (stopped: TrainResult['stopped']): TrainResult => ({ stopped, steps: state.step, passes: state.pass, lastPass, checkpoint, elapsed: elapsed() });
  const earlyStopped = () => o.earlyStop && lastPass !== undefined && state.position === 0 && lastPass.loss <= (1 + o.gamma) * lastPass.optimalLoss;
  // A run resumed from the checkpoint of the pass it stopped early after is already done.
  if (earlyStopped()) return result('early');

  while (state.pass < o.nIters) {
    const order = passOrder(o.seed, state.pass, prompts.length);
    while (state.position < stepsPerPass) {
      if (options.signal?.aborted) {
        await save();
        return result('signal');
      }
      const group = order.slice(state.position * N, (state.position + 1) * N);
      const trie = singleTries ? singleTries[group[0]] : model.trieBatch(group.map((i) => prompts[i]));
      const started = performance.now();
      await adapter.zeroGrad();
      const out = await model.step(trie, adapter, o.objective);
      // The step's gradient is the mean over its prompts: scale the summed one by 1/|group|.
      const gradNorm = (await adapter.gradNorm()) / group.length;
      const loss = crossEntropy(trie, out.sequenceLogProbs);
      const step = state.step + 1;
      if (!Number.isFinite(gradNorm) || !Number.isFinite(loss))
        throw new DiffuseError(
          'DIVERGED',
          `training diverged at step ${step} (prompts ${group.map((i) => names[i]).join(', ')}): the loss is ${loss} and the gradient norm ${gradNorm}; the adapter was not updated. Lower the learning rate${checkpoint ? ` and resume from ${checkpoint}` : ''}`,
        );
      const lr = learningRate(step, schedule);
      await adapter.adamwStep({
        lr,
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weightDecay: o.weightDecay,
        step,
        gradScale: clipCoefficient(gradNorm, o.maxGradNorm) / group.length,
      });
      const seconds = (performance.now() - started) / 1000;
      const optimalLoss = group.reduce((s, i) => s + optimal[i], 0);
      state.step = step;
      state.position += 1;
      state.passLoss += loss;
      state.passOptimalLoss += optimalLoss;
      const record: StepRecord = {
        type: 'step',
        pass: state.pass + 1,
        step,
        prompts: group.map((i) => names[i]),
        loss,
        optimalLoss,
        objectiveLoss: o.objective.kind === 'ce' ? loss : out.loss,
        gradNorm,
        lr,
        positions: trie.positions,
        positionsPerSecond: trie.positions / seconds,
        elapsed: elapsed(),
      };
      await log(record);
      await options.onStep?.(record);
      if (every !== undefined && step % every === 0 && state.position < stepsPerPass) await save();
    }
    lastPass = {
      type: 'pass',
      pass: state.pass + 1,
      step: state.step,
      loss: state.passLoss,
      optimalLoss: state.passOptimalLoss,
      earlyStopAt: (1 + o.gamma) * state.passOptimalLoss,
      elapsed: elapsed(),
    };
    state.pass += 1;
    state.position = 0;
    state.passLoss = 0;
    state.passOptimalLoss = 0;
    await log(lastPass);
    await options.onPass?.(lastPass);
    await save();
    if (earlyStopped()) return result('early');
  }
  return result('completed');
}

async function truncateLog(path: string, bytes: number): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (info && info.size > bytes) await truncate(path, bytes);
}
