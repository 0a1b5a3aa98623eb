/**
 * diffuse: fine-tune language models with LoRA so they produce diffuse distributions over valid
 * answers (Zhang et al., COLM 2024), and measure how diffuse they are.
 *
 * The public API, and all of it: models and adapters, target sets, tasks and configs, training,
 * evaluation, and the typed errors. Everything else under dist/ is internal and may change.
 */
export { loadModel, pickDevice, type LoadModelOptions, type Device, type RandomModelSpec } from './model/load.js';
export { presets, preset, parameterCount, initDtypes, type PresetName, type InitDtype } from './model/presets.js';
export { Model, type StepResult, type TargetDistribution, type TargetResult } from './model/model.js';
export { Adapter, loraModules, type AdapterOptions, type AdapterTensor, type LoraModule } from './model/adapter.js';
export { DEFAULT_MODEL, diffuseHome, ensureDefaultModel, type FetchOptions } from './model/default-model.js';
export { resolveModel, type ResolveOptions, type ResolvedModel } from './model/resolve.js';
export type { EngineConfig } from './native.js';
export { Tokenizer, loadTokenizer, type ChatMessage } from './tokenizer/index.js';
export { TargetSetError, type PreparedPrompt, type PrepareOptions, type TargetRequest, type TargetSequence } from './targets/target-set.js';
export {
  TaskError,
  ConfigError,
  loadTasks,
  readPromptPath,
  builtinTask,
  listBuiltinTasks,
  loadTrainConfig,
  type Task,
  type ReadOptions,
  type WarnFn,
  type BuiltinTaskInfo,
  type TrainConfig,
  type AlgConfig,
  type LoraSettings,
  type ConfigOptions,
} from './tasks/index.js';
export {
  train,
  trainDefaults,
  gemDefaults,
  loraDefaults,
  resolveObjective,
  adapterOptionsFromConfig,
  trainOptionsFromConfig,
  type Objective,
  type TrainOptions,
  type ResolvedTrainOptions,
  type TrainResult,
  type StepRecord,
  type PassRecord,
  type ScheduleKind,
} from './train/index.js';
export {
  saveAdapter,
  loadAdapter,
  readAdapterConfig,
  mergeAdapter,
  writeGgufLora,
  readGgufLora,
  type GgufLoraBase,
  type WriteGgufLoraOptions,
  type SaveAdapterOptions,
  type LoadAdapterOptions,
  type PeftAdapterConfig,
  type MergeOptions,
  type MergeResult,
} from './adapters/index.js';
export {
  evaluate,
  type EvalTask,
  type EvaluateOptions,
  type Evaluation,
  type EvaluationSettings,
  type TaskEvaluation,
  type TaskExact,
  type TaskSampled,
  type PromptEvaluation,
  type PromptSampled,
  type SampleRecord,
} from './eval/evaluate.js';
export { sample, type SampleOptions, type Sampling, type TextSample, type TokenSample, type FinishReason } from './eval/sample.js';
export { generate, type GenerateOptions, type GeneratedSample } from './generate/generate.js';
export { renderReport, type ReportRun, type ReportOptions } from './eval/report.js';
export type { ExactMetrics, ExactTarget, SampledMetrics, SampledAnswer, ValueCount, FieldMetrics } from './eval/metrics.js';
export type { Interval } from './eval/stats.js';
export {
  DiffuseError,
  InvalidArgumentError,
  ModelFormatError,
  NetworkError,
  NotFoundError,
  OutOfMemoryError,
  UnsupportedError,
  type ErrorCode,
} from './errors.js';
