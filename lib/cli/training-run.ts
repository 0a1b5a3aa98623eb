/**
 * One training run as the CLI does it: a progress bar over the optimiser steps, the JSONL log,
 * checkpoints under OUT/checkpoints, Ctrl-C that finishes the step, checkpoints and saves (a
 * second Ctrl-C quits at once), and the adapter saved in PEFT layout in OUT at the end.
 */
import { join } from 'node:path';

import { saveAdapter } from '../adapters/peft.js';
import type { Adapter } from '../model/adapter.js';
import type { Model } from '../model/model.js';
import type { Progress } from '../progress.js';
import type { PreparedPrompt } from '../targets/target-set.js';
import { resolveTrainOptions, train, type StepRecord, type TrainOptions, type TrainResult } from '../train/index.js';

export interface TrainingRun {
  model: Model;
  adapter: Adapter;
  prompts: PreparedPrompt[];
  names: string[];
  options: TrainOptions;
  /** Where the adapter, the log and the checkpoints go. */
  outDir: string;
  /** Where checkpoints go (default OUT/checkpoints). */
  checkpointDir?: string;
  /** The JSONL log (default OUT/train-log.jsonl). */
  logFile?: string;
  resume?: boolean;
  progress: Progress;
  /** Called with each step's record (the CLI's --json mode collects them). */
  onStep?: (record: StepRecord) => void;
}

export interface TrainingOutcome extends TrainResult {
  adapterDir: string;
  logFile: string;
  checkpointDir: string;
}

export async function runTraining(run: TrainingRun): Promise<TrainingOutcome> {
  const { model, adapter, prompts, names, progress, outDir } = run;
  const resolved = resolveTrainOptions(run.options);
  const totalSteps = resolved.nIters * Math.ceil(prompts.length / resolved.promptsPerStep);
  const logFile = run.logFile ?? join(outDir, 'train-log.jsonl');
  const checkpointDir = run.checkpointDir ?? join(outDir, 'checkpoints');
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts += 1;
    if (interrupts === 1) {
      progress.log('stopping after this step (saving a checkpoint and the adapter); press Ctrl-C again to quit at once');
      controller.abort(new Error('interrupted'));
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', onSigint);
  const task = progress.task('training', { total: totalSteps, unit: 'steps' });
  try {
    const result = await train(model, adapter, prompts, {
      ...run.options,
      names,
      logFile,
      checkpointDir,
      resume: run.resume,
      baseModel: run.options.baseModel ?? model.spec,
      signal: controller.signal,
      onStep: (r) => {
        task.update(r.step, totalSteps);
        task.detail(`loss ${r.loss.toFixed(3)} (best ${r.optimalLoss.toFixed(3)}) · ‖g‖ ${r.gradNorm.toFixed(2)} · ${Math.round(r.positionsPerSecond)} pos/s`);
        run.onStep?.(r);
      },
      onPass: (p) => {
        if (progress.mode === 'lines') progress.log(`pass ${p.pass}: loss ${p.loss.toFixed(4)} (optimal ${p.optimalLoss.toFixed(4)}) after ${p.elapsed.toFixed(1)} s`);
      },
    });
    await saveAdapter(adapter, outDir, { baseModel: model.spec });
    task.done(
      result.stopped === 'signal'
        ? `stopped after step ${result.steps}; resume with --resume`
        : `${result.steps} steps in ${result.elapsed.toFixed(1)} s${result.stopped === 'early' ? ' (stopped early: loss within γ of optimal)' : ''}`,
    );
    return { ...result, adapterDir: outDir, logFile, checkpointDir };
  } catch (error) {
    task.fail(error instanceof Error ? error.message : String(error));
    throw error;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
