/**
 * Writes that never leave a half-written file under its final name. A whole file is written to
 * a temporary file beside its target, flushed, then renamed over it; a line is appended to a log
 * whole or not at all. On failure (a full disk, a read-only directory) the error names the path
 * and what was there before is as it was.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

import { DiffuseError } from './errors.js';

async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += (await handle.write(bytes, done, bytes.length - done)).bytesWritten;
}

function ioError(path: string, error: unknown, what: string): DiffuseError {
  if (error instanceof DiffuseError) return error;
  return new DiffuseError('IO', `cannot write ${path} (${(error as Error).message}); ${what}`, { cause: error });
}

/** What writes a file's contents, through `write`, one chunk at a time. */
export type Produce = (write: (bytes: Uint8Array) => Promise<void>) => Promise<void>;

/**
 * Writes a file atomically: `produce` writes the contents through the handle of a temporary
 * file beside `path`; once it succeeds the file is flushed and renamed over `path`. On any
 * failure the temporary file is removed and `path` is untouched.
 */
export function writeFileAtomically(path: string, produce: Produce): Promise<void> {
  return writeFilesAtomically([{ path, produce }]);
}

/**
 * Writes several files that belong together (an adapter's weights and config): every one to a
 * temporary file first, and only when all are written and flushed are they renamed into place.
 * A failure while writing (a full disk, a read-only directory) leaves every final name as it was.
 */
export async function writeFilesAtomically(files: { path: string; produce: Produce }[]): Promise<void> {
  const temps: string[] = [];
  try {
    for (const { path, produce } of files) {
      const temp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
      let handle: FileHandle | undefined;
      try {
        handle = await open(temp, 'wx');
        temps.push(temp);
        const h = handle;
        await produce((bytes) => writeAll(h, bytes));
        await h.sync();
        await h.close();
        handle = undefined;
      } catch (error) {
        await handle?.close().catch(() => undefined);
        throw ioError(path, error, 'check the directory exists, is writable and has space; any earlier file there is unchanged');
      }
    }
    for (let i = 0; i < files.length; i++) {
      await rename(temps[i], files[i].path).catch((error: unknown) => {
        throw ioError(files[i].path, error, 'check the directory is writable');
      });
    }
  } catch (error) {
    await Promise.all(temps.map((t) => unlink(t).catch(() => undefined)));
    throw error;
  }
}

/** writeFileAtomically with text (UTF-8) as the contents. */
export function writeTextAtomically(path: string, text: string): Promise<void> {
  return writeFileAtomically(path, (write) => write(Buffer.from(text, 'utf8')));
}

/**
 * Appends `line` (which ends in a newline) to `path`, creating it, whole or not at all: a write
 * that fails midway is cut back to the file's previous length. Returns the bytes appended.
 */
export async function appendLine(path: string, line: string): Promise<number> {
  const bytes = Buffer.from(line, 'utf8');
  let handle: FileHandle | undefined;
  let before = -1;
  try {
    handle = await open(path, 'a');
    before = (await handle.stat()).size;
    await writeAll(handle, bytes);
    await handle.close();
    return bytes.length;
  } catch (error) {
    if (handle && before >= 0) await handle.truncate(before).catch(() => undefined);
    await handle?.close().catch(() => undefined);
    throw ioError(path, error, 'check the directory is writable and has space; the lines already logged are intact');
  }
}

/** Creates a directory and its parents (mkdir -p); a failure is an IO error naming the path. */
export async function makeDirectory(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true });
  } catch (error) {
    throw new DiffuseError('IO', `cannot create the directory ${path} (${(await firstFailure(path, error)).message}); check its parent is writable and has space`, { cause: error });
  }
}

/** The real reason a recursive mkdir failed: Node reports EROFS under a read-only parent as ENOENT. */
async function firstFailure(path: string, error: unknown): Promise<Error> {
  let dir = resolve(path);
  const missing: string[] = [];
  while (!(await stat(dir).catch(() => undefined)) && dirname(dir) !== dir) {
    missing.unshift(dir);
    dir = dirname(dir);
  }
  if (missing.length === 0) return error as Error;
  return mkdir(missing[0]).then(
    () => error as Error,
    (e: Error) => e,
  );
}
