/** Tasks and training configs: the reference's prompt files and YAML configs, and the built-in task library. */
export { TaskError, ConfigError, defaultWarn, type WarnFn } from './errors.js';
export { parsePromptJson, readPromptFile, readPromptPath, listPromptFiles, type Task, type ReadOptions } from './prompt-files.js';
export { builtinTask, listBuiltinTasks, isBuiltinTaskId, rngRequests, builtinDataDir, type BuiltinTaskInfo } from './builtin.js';
export { bioPeople, formatBioTarget, type BioPerson, type BioPools, type BioGender } from './bio-attributes.js';
export { loadTasks, isBuiltinSpec, looksLikePath } from './load.js';
export {
  loadTrainConfig,
  type TrainConfig,
  type AlgConfig,
  type LoraSettings,
  type ConfigOptions,
} from './config.js';
