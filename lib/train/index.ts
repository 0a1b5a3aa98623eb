/** Training: the reference's loop (AdamW, clipping, shuffled passes, early stop), schedules and checkpoints. */
export {
  train,
  resolveTrainOptions,
  trainDefaults,
  type TrainOptions,
  type ResolvedTrainOptions,
  type TrainResult,
  type StepRecord,
  type PassRecord,
} from './train.js';
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
