/**
 * Training checkpoints: everything a run needs to continue exactly where it stopped.
 *
 *   <checkpointDir>/latest                      "step-00000120": the newest complete checkpoint
 *   <checkpointDir>/step-00000120/
 *       adapter_config.json                     the adapter in PEFT layout (loadable as is)
 *       adapter_model.safetensors
 *       optimizer.safetensors                   AdamW's moments, "<PEFT key>.exp_avg" and
 *                                               "<PEFT key>.exp_avg_sq" (torch's names), f32
 *       trainer_state.json                      step, pass, position in the pass, the pass's
 *                                               loss so far, the options that must match, …
 *
 * Saving writes a temporary directory, flushes it, renames it to step-N, then points `latest`
 * at it (an atomic rename of a small file), then removes checkpoints beyond the ones kept. A
 * failure at any point leaves `latest` naming the previous complete checkpoint.
 *
 * Parameters and moments are f32 in the engine and f32 here, the step count and the pass
 * position are integers, and the prompt order is a function of (seed, pass): so a resumed run
 * computes bit for bit what the uninterrupted run would have.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { DiffuseError, InvalidArgumentError, ModelFormatError, NotFoundError } from '../errors.js';
import { readSafetensors } from '../formats/safetensors.js';
import { makeDirectory, writeTextAtomically } from '../atomic-write.js';
import { writeSafetensors } from '../formats/safetensors-writer.js';
import { ADAPTER_WEIGHTS_FILE, adapterTensorsByKey, saveAdapter } from '../adapters/peft.js';
import { readTensorsF32 } from '../adapters/tensor-file.js';
import type { Adapter } from '../model/adapter.js';
import type { Objective } from './objective.js';
import type { PreparedPrompt } from '../targets/target-set.js';
import type { PassRecord } from './train.js';

export const CHECKPOINT_FORMAT = 'diffuse-checkpoint';
export const CHECKPOINT_VERSION = 1;
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_STATE_FILE = 'trainer_state.json';
const LATEST_FILE = 'latest';

/** Where a run stands. */
export interface CheckpointState {
  /** Optimiser steps taken. */
  step: number;
  /** Complete passes (0-based index of the current pass). */
  pass: number;
  /** Optimiser steps taken in the current pass. */
  position: number;
  /** The current pass's summed loss and optimal loss so far (for its early-stop test). */
  passLoss: number;
  passOptimalLoss: number;
  /** Seconds of training so far. */
  elapsed: number;
  /** The JSONL log (absolute) and its length when the checkpoint was taken. */
  logFile: string | null;
  logBytes: number;
}

/** The options the loss curve depends on; a resume must give the same. */
export interface MatchedOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** null: no clipping. */
  maxGradNorm: number | null;
  warmupSteps: number;
  schedule: string;
  /** The run's length in steps, when the schedule depends on it (cosine). */
  totalSteps: number | null;
  promptsPerStep: number;
  seed: number;
  objective: Objective;
}

export interface TrainerStateFile {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  state: CheckpointState;
  options: MatchedOptions;
  /** Passes the run was started for (informational: a constant-schedule run may be extended). */
  nIters: number;
  prompts: { count: number; fingerprint: string };
  adapter: { rank: number; alpha: number; targetModules: string[] };
  lastPass?: PassRecord;
}

export interface SaveCheckpointOptions {
  state: CheckpointState;
  options: MatchedOptions;
  nIters: number;
  fingerprint: string;
  promptCount: number;
  lastPass?: PassRecord;
  baseModel: string | null;
  /** Checkpoints to keep, newest first (at least 1). */
  keep: number;
}

export interface Checkpoint {
  /** The step directory. */
  dir: string;
  trainer: TrainerStateFile;
}

/** A hash of the prompts' token sequences and weights: a resume must train on the same set. */
export function promptsFingerprint(prompts: PreparedPrompt[]): string {
  const hash = createHash('sha256');
  for (const p of prompts) hash.update(JSON.stringify([p.promptTokens, p.sequences.map((s) => [s.tokens, s.weight])]));
  return hash.digest('hex');
}

function stepDirName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

const STEP_DIR = /^step-(\d{8,})(-[0-9a-f]+)?$/;

/** Flushes a directory's entries (renames into it) to disk, where the platform allows. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r').catch(() => undefined);
  if (!handle) return;
  await handle.sync().catch(() => undefined);
  await handle.close();
}

/** Saves a checkpoint under `checkpointDir`; returns its step directory. */
export async function saveCheckpoint(checkpointDir: string, adapter: Adapter, o: SaveCheckpointOptions): Promise<string> {
  const root = resolve(checkpointDir);
  await makeDirectory(root);
  // A step saved before (by a run resumed from an earlier checkpoint) keeps its directory
  // until `latest` has moved on; this one gets a name of its own.
  let name = stepDirName(o.state.step);
  if (await stat(join(root, name)).catch(() => undefined)) name += `-${randomBytes(4).toString('hex')}`;
  const final = join(root, name);
  const temp = join(root, `.tmp-${name}-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(temp);
    await saveAdapter(adapter, temp, { baseModel: o.baseModel });
    const tensors = adapterTensorsByKey(adapter);
    await writeSafetensors(
      join(temp, OPTIMIZER_FILE),
      tensors.flatMap((t) => [
        { name: `${t.peftKey}.exp_avg`, shape: t.shape, data: () => adapter.getTensor(t.name, 'm') },
        { name: `${t.peftKey}.exp_avg_sq`, shape: t.shape, data: () => adapter.getTensor(t.name, 'v') },
      ]),
      { metadata: { format: 'pt', step: String(o.state.step) } },
    );
    const trainer: TrainerStateFile = {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      state: o.state,
      options: o.options,
      nIters: o.nIters,
      prompts: { count: o.promptCount, fingerprint: o.fingerprint },
      adapter: { rank: adapter.rank, alpha: adapter.alpha, targetModules: [...adapter.targetModules] },
      ...(o.lastPass ? { lastPass: o.lastPass } : {}),
    };
    await writeTextAtomically(join(temp, TRAINER_STATE_FILE), JSON.stringify(trainer, null, 2) + '\n');
    await syncDirectory(temp);
    await rename(temp, final);
    await syncDirectory(root);
    await writeTextAtomically(join(root, LATEST_FILE), name + '\n');
    await syncDirectory(root);
  } catch (error) {
    await rm(temp, { recursive: true, force: true }).catch(() => undefined);
    if (error instanceof DiffuseError && error.code !== 'IO') throw error;
    throw new DiffuseError('IO', `cannot save the checkpoint of step ${o.state.step} in ${root} (${(error as Error).message}); the previous checkpoint is intact`, { cause: error });
  }
  await pruneCheckpoints(root, name, o.keep);
  return final;
}

/** Removes step directories beyond the newest `keep` (never the current one) and stale temporaries. */
async function pruneCheckpoints(root: string, current: string, keep: number): Promise<void> {
  const entries = await readdir(root);
  const stepOf = (e: string) => Number(STEP_DIR.exec(e)![1]);
  const steps = entries.filter((e) => STEP_DIR.test(e) && e !== current).sort((a, b) => stepOf(b) - stepOf(a));
  const stale = [...steps.slice(keep - 1), ...entries.filter((e) => e.startsWith('.tmp-step-') && !e.includes(`-${process.pid}-`))];
  for (const e of stale) await rm(join(root, e), { recursive: true, force: true });
}

/**
 * Reads a checkpoint: a checkpoint directory (its `latest`) or one step directory. With
 * `optional`, a checkpoint directory that does not exist or has none gives undefined.
 */
export async function readCheckpoint(path: string, options: { optional?: boolean } = {}): Promise<Checkpoint | undefined> {
  const root = resolve(path);
  let dir = root;
  const latest = await readFile(join(root, LATEST_FILE), 'utf8').catch(() => undefined);
  if (latest !== undefined) {
    const name = latest.trim();
    if (!STEP_DIR.test(name)) throw new ModelFormatError(join(root, LATEST_FILE), undefined, `names ${JSON.stringify(name)}, not a step directory; the checkpoint directory is damaged`);
    dir = join(root, name);
  } else if (!(await stat(join(root, TRAINER_STATE_FILE)).catch(() => undefined))) {
    if (options.optional) return undefined;
    throw new NotFoundError(`${root} holds no checkpoint (neither a 'latest' file nor ${TRAINER_STATE_FILE}); give a checkpoint directory a training run wrote`);
  }
  const file = join(dir, TRAINER_STATE_FILE);
  let trainer: TrainerStateFile;
  try {
    trainer = JSON.parse(await readFile(file, 'utf8')) as TrainerStateFile;
  } catch (error) {
    throw new ModelFormatError(file, undefined, `cannot be read as JSON (${(error as Error).message}); the checkpoint is damaged`);
  }
  if (trainer?.format !== CHECKPOINT_FORMAT) throw new ModelFormatError(file, 'format', `is ${JSON.stringify(trainer?.format)}, not ${CHECKPOINT_FORMAT}`);
  if (trainer.version !== CHECKPOINT_VERSION)
    throw new ModelFormatError(file, 'version', `is ${trainer.version}; this version of diffuse reads version ${CHECKPOINT_VERSION} checkpoints`);
  checkTrainerState(file, trainer);
  return { dir, trainer };
}

/** The fields resuming reads, checked: a damaged trainer_state.json is named, never a TypeError. */
function checkTrainerState(file: string, t: TrainerStateFile): void {
  const fail = (field: string, problem: string): never => {
    throw new ModelFormatError(file, field, `${problem}; the checkpoint is damaged, resume from an earlier one or start a fresh run`);
  };
  const object = (field: string, v: unknown) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(field, `is ${JSON.stringify(v) ?? 'missing'}, not an object`);
  };
  const whole = (field: string, v: unknown) => {
    if (!Number.isSafeInteger(v) || (v as number) < 0) fail(field, `is ${JSON.stringify(v) ?? 'missing'}, not a whole number ≥ 0`);
  };
  const finite = (field: string, v: unknown) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(field, `is ${JSON.stringify(v) ?? 'missing'}, not a finite number`);
  };
  object('state', t.state);
  for (const key of ['step', 'pass', 'position', 'logBytes'] as const) whole(`state.${key}`, t.state[key]);
  for (const key of ['passLoss', 'passOptimalLoss', 'elapsed'] as const) finite(`state.${key}`, t.state[key]);
  if (t.state.logFile !== null && typeof t.state.logFile !== 'string') fail('state.logFile', `is ${JSON.stringify(t.state.logFile) ?? 'missing'}, not a path or null`);
  object('options', t.options);
  whole('nIters', t.nIters);
  object('prompts', t.prompts);
  whole('prompts.count', t.prompts.count);
  if (typeof t.prompts.fingerprint !== 'string') fail('prompts.fingerprint', 'is missing');
  object('adapter', t.adapter);
  whole('adapter.rank', t.adapter.rank);
  finite('adapter.alpha', t.adapter.alpha);
  if (!Array.isArray(t.adapter.targetModules) || t.adapter.targetModules.some((m) => typeof m !== 'string')) fail('adapter.targetModules', 'is not a list of module names');
}

function describeDifferences(saved: MatchedOptions, now: MatchedOptions): string[] {
  const out: string[] = [];
  for (const key of Object.keys(now) as (keyof MatchedOptions)[]) {
    const a = JSON.stringify(saved[key]), b = JSON.stringify(now[key]);
    if (a !== b) out.push(`${key}: checkpoint ${a}, now ${b}`);
  }
  return out;
}

/**
 * Checks that a checkpoint belongs to this run, then loads its parameters and AdamW moments
 * into `adapter`. Returns the state to continue from.
 */
export async function loadCheckpointInto(
  checkpoint: Checkpoint,
  adapter: Adapter,
  run: { options: MatchedOptions; fingerprint: string; promptCount: number },
): Promise<CheckpointState> {
  const { dir, trainer } = checkpoint;
  const problems = describeDifferences(trainer.options, run.options);
  if (trainer.prompts.count !== run.promptCount || trainer.prompts.fingerprint !== run.fingerprint)
    problems.push(`prompts: the checkpoint was trained on ${trainer.prompts.count} prompts with other tokens or weights than these ${run.promptCount}`);
  const a = trainer.adapter;
  if (a.rank !== adapter.rank || a.alpha !== adapter.alpha || [...a.targetModules].sort().join() !== [...adapter.targetModules].sort().join())
    problems.push(`adapter: the checkpoint's is r=${a.rank}, alpha=${a.alpha} on ${a.targetModules.join(',')}; this one r=${adapter.rank}, alpha=${adapter.alpha} on ${adapter.targetModules.join(',')}`);
  if (problems.length > 0)
    throw new InvalidArgumentError(`cannot resume from ${dir}: the run differs from the one that wrote it (${problems.join('; ')}); use the same settings or start a fresh run`);

  const weights = await readSafetensors(join(dir, ADAPTER_WEIGHTS_FILE));
  const moments = await readSafetensors(join(dir, OPTIMIZER_FILE));
  const tensors = adapterTensorsByKey(adapter);
  const parts = [
    { file: weights, suffix: '', part: 'param' },
    { file: moments, suffix: '.exp_avg', part: 'm' },
    { file: moments, suffix: '.exp_avg_sq', part: 'v' },
  ] as const;
  for (const { file, suffix, part } of parts) {
    const keys = tensors.map((t) => t.peftKey + suffix);
    const values = await readTensorsF32(file, keys);
    for (const [i, t] of tensors.entries()) {
      const info = file.tensors.get(keys[i])!;
      if (info.dtype !== 'F32' || info.shape.join() !== t.shape.join())
        throw new ModelFormatError(file.path, `tensor '${keys[i]}'`, `is ${info.dtype} [${info.shape.join(', ')}]; the adapter needs F32 [${t.shape.join(', ')}]`);
      await adapter.setTensor(t.name, values.get(keys[i])!, part);
    }
  }
  return { ...trainer.state };
}
