/**
 * diffuse: fine-tune language models with LoRA so they produce diffuse distributions over valid
 * answers (Zhang et al., COLM 2024), and measure how diffuse they are.
 */
export { loadModel, pickDevice, type LoadModelOptions, type Device, type RandomModelSpec } from './model/load.js';
export { presets, preset, parameterCount, type PresetName } from './model/presets.js';
export {
  Model,
  distributionOf,
  type Objective,
  type StepResult,
  type TargetDistribution,
  type TargetResult,
} from './model/model.js';
export { Adapter, loraModules, type AdapterOptions, type AdapterTensor, type LoraModule } from './model/adapter.js';
export { DEFAULT_MODEL, diffuseHome, ensureDefaultModel } from './model/default-model.js';
export { resolveModel, type ResolveOptions, type ResolvedModel } from './model/resolve.js';
export { Tokenizer, loadTokenizer, type ChatMessage } from './tokenizer/index.js';
export {
  buildPaddedBatch,
  buildTrieBatch,
  preparePrompt,
  sequenceLogProbs,
  TargetSetError,
  type PreparedPrompt,
  type TargetRequest,
  type TrieBatch,
} from './targets/target-set.js';
export * from './tasks/index.js';
export * from './train/index.js';
export * from './adapters/index.js';
export { generate, type GenerateOptions, type GeneratedSample } from './generate/generate.js';
export { Progress, type ProgressMode, type ProgressOptions } from './progress.js';
export {
  DiffuseError,
  InvalidArgumentError,
  ModelFormatError,
  NetworkError,
  NotFoundError,
  UnsupportedError,
  type ErrorCode,
} from './errors.js';
