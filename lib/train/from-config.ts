/**
 * A training config (lib/tasks/config.ts: the reference's YAML plus our keys) as the options of
 * model.createAdapter() and train(). `alg_config.batch_size` has no counterpart: the reference
 * splits a prompt's targets into batches only to bound memory, and a trie step computes all of
 * them at once (the same gradient); the engine bounds memory with its activation budget.
 */
import type { AdapterOptions, LoraModule } from '../model/adapter.js';
import type { TrainConfig } from '../tasks/config.js';
import type { TrainOptions } from './train.js';

/** The adapter a config asks for (its lora settings and seed), as model.createAdapter() takes it. */
export function adapterOptionsFromConfig(config: TrainConfig): AdapterOptions {
  return { rank: config.lora.rank, alpha: config.lora.alpha, targetModules: config.lora.targetModules as LoraModule[], seed: config.seed };
}

/** The loop's options; callbacks, logs, checkpoints and cancellation are the caller's to add. */
export function trainOptionsFromConfig(config: TrainConfig): TrainOptions {
  return {
    nIters: config.alg.nIters,
    earlyStop: config.alg.earlyStop,
    gamma: config.alg.gamma,
    lr: config.lr,
    warmupSteps: config.warmupSteps,
    schedule: config.schedule,
    seed: config.seed,
    promptsPerStep: config.promptsPerStep,
    objective: config.objective,
    baseModel: config.model,
  };
}
