/** Training: the reference's loop (AdamW, clipping, shuffled passes, early stop), schedules and checkpoints. */
export {
  train,
  resolveTrainOptions,
  type TrainOptions,
  type ResolvedTrainOptions,
  type TrainResult,
  type StepRecord,
  type PassRecord,
} from './train.js';
export { trainDefaults, gemDefaults, loraDefaults } from './defaults.js';
export { resolveObjective, type Objective } from './objective.js';
export { learningRate, checkSchedule, type ScheduleKind, type ScheduleOptions } from './schedule.js';
export { passOrder } from './order.js';
export {
  readCheckpoint,
  saveCheckpoint,
  loadCheckpointInto,
  promptsFingerprint,
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  type Checkpoint,
  type CheckpointState,
  type MatchedOptions,
  type TrainerStateFile,
} from './checkpoint.js';
export { adapterOptionsFromConfig, trainOptionsFromConfig } from './from-config.js';
