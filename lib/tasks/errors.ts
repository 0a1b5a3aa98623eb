/**
 * Errors for task prompt files, built-in task ids and training configs. Each names the file (or
 * the id), the field at fault when there is one, and what is wrong.
 */
import { DiffuseError } from '../errors.js';

function locate(file: string, field: string | undefined, problem: string): string {
  return `${file}${field ? `: ${field}` : ''}: ${problem}`;
}

/** A prompt file, prompt directory or built-in task id that cannot be used as given. */
export class TaskError extends DiffuseError {
  /** The file, directory or built-in id at fault. */
  readonly file: string;
  /** The field at fault (`targets[3]`, `weights`), when there is one. */
  readonly field?: string;
  constructor(file: string, field: string | undefined, problem: string, options?: { cause?: unknown }) {
    super('TASK', locate(file, field, problem), options);
    this.file = file;
    this.field = field;
  }
}

/** A training config (YAML) that cannot be used as given. */
export class ConfigError extends DiffuseError {
  /** The config file, absolute. */
  readonly file: string;
  /** The key at fault, dotted for nested keys (`alg_config.n_iters`, `train_prompts[1]`). */
  readonly field?: string;
  constructor(file: string, field: string | undefined, problem: string, options?: { cause?: unknown }) {
    super('CONFIG', locate(file, field, problem), options);
    this.file = file;
    this.field = field;
  }
}

/** Receives one message per fixable oddity (an unknown key that was ignored). */
export type WarnFn = (message: string) => void;

/** The default: a process warning of type DiffuseWarning, which `process.on('warning')` can catch. */
export const defaultWarn: WarnFn = (message) => process.emitWarning(message, { type: 'DiffuseWarning' });
