/**
 * Typed errors. Every error diffuse throws on purpose is a DiffuseError with a stable `code`
 * and a message that names what went wrong and says what to do about it.
 */

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'FORMAT'
  | 'UNSUPPORTED'
  | 'NOT_FOUND'
  | 'NETWORK'
  | 'IO'
  | 'OUT_OF_MEMORY'
  | 'DEVICE'
  | 'DISPOSED'
  | 'TASK'
  | 'CONFIG'
  | 'DIVERGED'
  | 'INTERNAL';

/** The base of every error diffuse throws on purpose: a stable `code` and a message that says what to do. */
export class DiffuseError extends Error {
  /** What kind of failure: INVALID_ARGUMENT, FORMAT, IO, DIVERGED, … (ErrorCode). */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A model or adapter file whose contents are malformed, truncated or unsupported. */
export class ModelFormatError extends DiffuseError {
  /** The file at fault. */
  readonly file: string;
  /** The header field, metadata key or tensor at fault, when there is one. */
  readonly field?: string;
  constructor(file: string, field: string | undefined, problem: string) {
    super('FORMAT', `${file}${field ? `: ${field}` : ''}: ${problem}`);
    this.file = file;
    this.field = field;
  }
}

/** A valid request this build or this model cannot serve. */
export class UnsupportedError extends DiffuseError {
  constructor(message: string) {
    super('UNSUPPORTED', message);
  }
}

/** A bad argument to a public function. */
export class InvalidArgumentError extends DiffuseError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

/** A model, file or task that does not exist where it was looked for. */
export class NotFoundError extends DiffuseError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/** A download that could not be made. */
export class NetworkError extends DiffuseError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('NETWORK', message, options);
  }
}

const nativeCodes: Record<string, ErrorCode> = {
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  OUT_OF_MEMORY: 'OUT_OF_MEMORY',
  IO: 'IO',
  FORMAT: 'FORMAT',
  UNSUPPORTED: 'UNSUPPORTED',
  DEVICE: 'DEVICE',
  DISPOSED: 'DISPOSED',
};

/**
 * Turns an error thrown by the native addon (an Error with a string `code`) into a
 * DiffuseError. Checked by shape, not instanceof: the addon's errors come from the main realm,
 * which a VM context (a jest test, say) does not share.
 */
export function fromNative(error: unknown): DiffuseError {
  if (error instanceof DiffuseError) return error;
  if (typeof error === 'object' && error !== null && typeof (error as { message?: unknown }).message === 'string') {
    const { message, code } = error as { message: string; code?: unknown };
    return new DiffuseError(nativeCodes[typeof code === 'string' ? code : ''] ?? 'INTERNAL', message, { cause: error });
  }
  return new DiffuseError('INTERNAL', String(error));
}

/** Awaits a native call, rethrowing its failure as a DiffuseError. */
export async function nativeCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw fromNative(error);
  }
}
