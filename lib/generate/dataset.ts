/**
 * The JSON Lines file `diffuse generate` writes: one line per sample,
 *
 *   {"prompt_id", "prompt", "index", "seed", "text", "tokens", "finish_reason", "fields",
 *    "answer"?, "valid"?, "biography"?, "settings"}
 *
 * appended one whole line per write(2), so a killed run leaves whole lines plus at most one
 * partial last line, which the next run cuts off before it appends. `settings` (model,
 * adapter and sampling settings) is on every line: a rerun with the same settings continues
 * each prompt to N without repeating or losing a sample (sample i is always draw stream i); a
 * file written with other settings, or by something else, is refused and left as it is.
 */
import { accessSync, closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

import { DiffuseError, InvalidArgumentError } from '../errors.js';
import { answerReader, braceGroups, isBiographyRequest, parseBiography, type Biography } from '../eval/metrics.js';
import type { FinishReason } from '../eval/sample.js';
import type { GeneratedSample } from './generate.js';
import type { GeneratePrompt } from './prompts.js';

/** What makes two runs' samples the same samples; N and the prompts are not in it. */
export interface GenerateSettings {
  model: string;
  adapter: string | null;
  temperature: number;
  top_p: number;
  top_k: number;
  max_tokens: number;
  stop: string[];
}

export interface SampleLine {
  prompt_id: string;
  prompt: string;
  index: number;
  seed: number;
  text: string;
  /** Tokens drawn, the stop token included. */
  tokens: number;
  finish_reason: FinishReason;
  /** The text's {…} groups, trimmed, in order. */
  fields: string[];
  /** The answer in the task's format, when the text has one. */
  answer?: string;
  /** Whether the answer is in the prompt's target set (prompts with targets only). */
  valid?: boolean;
  /** The named fields, for the paper's biography prompt. */
  biography?: Biography;
  settings: GenerateSettings;
}

const settingsKey = (s: GenerateSettings) => JSON.stringify([s.model, s.adapter, s.temperature, s.top_p, s.top_k, s.max_tokens, s.stop]);

/** Refuses an output path that cannot be written, before any model work. */
export function checkWritable(file: string, flag: string): void {
  const path = resolve(file);
  let stats;
  try {
    stats = statSync(path);
  } catch {
    try {
      accessSync(dirname(path), constants.W_OK);
    } catch {
      throw new DiffuseError('IO', `${flag} ${file} cannot be created: ${dirname(path)} does not exist or is not writable`);
    }
    return;
  }
  if (!stats.isFile()) throw new DiffuseError('IO', `${flag} ${file} is not a regular file`);
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
  } catch {
    throw new DiffuseError('IO', `${flag} ${file} is not writable (or not readable, which resuming needs)`);
  }
}

/** The output file of one run: what it already holds, and the appending of new lines. */
export class Dataset {
  readonly file: string;
  /** Per prompt id, its lines by sample index. */
  readonly lines = new Map<string, Map<number, SampleLine>>();
  /** Bytes of a partial last line cut off when the file was opened (a killed run's). */
  readonly cutBytes: number;
  private readonly fd: number;
  private readonly settings: GenerateSettings;
  private readonly readers = new Map<string, ReturnType<typeof answerReader> & { biography: boolean }>();

  private constructor(file: string, fd: number, settings: GenerateSettings, cutBytes: number) {
    this.file = file;
    this.fd = fd;
    this.settings = settings;
    this.cutBytes = cutBytes;
  }

  /**
   * Reads what `file` holds (if it exists), checking every line was written by a run with these
   * settings for one of these prompts; then opens it for appending, cutting off a partial last
   * line. Throws, leaving the file untouched, when it holds anything else.
   */
  static open(file: string, settings: GenerateSettings, prompts: readonly GeneratePrompt[]): Dataset {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new DiffuseError('IO', `cannot read ${file}: ${(error as Error).message}`);
      bytes = Buffer.alloc(0);
    }
    const whole = bytes.lastIndexOf(0x0a) + 1;
    const byId = new Map(prompts.map((p) => [p.id, p]));
    const lines = new Map<string, Map<number, SampleLine>>(prompts.map((p) => [p.id, new Map()]));
    const refuse = (n: number, why: string) =>
      new InvalidArgumentError(`${file} line ${n} ${why}; it was not written by this command with these arguments. Rerun with the arguments it was written with, or choose another --out (the file is left as it is)`);
    bytes
      .subarray(0, whole)
      .toString('utf8')
      .split('\n')
      .forEach((text, i) => {
        if (text === '') return;
        let line: SampleLine;
        try {
          line = JSON.parse(text) as SampleLine;
        } catch {
          throw refuse(i + 1, 'is not JSON');
        }
        if (typeof line !== 'object' || line === null || typeof line.settings !== 'object' || line.settings === null) throw refuse(i + 1, 'is not a sample line of diffuse generate');
        if (settingsKey(line.settings) !== settingsKey(settings)) {
          const differ = (Object.keys(settings) as (keyof GenerateSettings)[]).filter((k) => JSON.stringify(line.settings[k]) !== JSON.stringify(settings[k]));
          throw refuse(i + 1, `was written with other settings (${differ.map((k) => `${k} ${JSON.stringify(line.settings[k])}, not ${JSON.stringify(settings[k])}`).join('; ')})`);
        }
        const prompt = byId.get(line.prompt_id);
        if (!prompt) throw refuse(i + 1, `is a sample of prompt '${line.prompt_id}', which these arguments do not ask for`);
        if (line.prompt !== prompt.request.request) throw refuse(i + 1, `has another text for prompt '${line.prompt_id}'`);
        if (!Number.isSafeInteger(line.index) || line.index < 0) throw refuse(i + 1, `has sample index ${JSON.stringify(line.index)}`);
        const own = lines.get(line.prompt_id)!;
        if (own.has(line.index)) throw refuse(i + 1, `repeats sample ${line.index} of prompt '${line.prompt_id}'`);
        own.set(line.index, line);
      });
    let fd: number;
    try {
      fd = openSync(file, 'a');
      if (whole < bytes.length) ftruncateSync(fd, whole);
    } catch (error) {
      throw new DiffuseError('IO', `cannot write ${file}: ${(error as Error).message}`);
    }
    const dataset = new Dataset(file, fd, settings, bytes.length - whole);
    for (const [id, own] of lines) dataset.lines.set(id, own);
    for (const p of prompts) dataset.readers.set(p.id, { ...answerReader(p.request.targets), biography: isBiographyRequest(p.request.request) });
    return dataset;
  }

  /** The indices below n that `prompt` has no line for, ascending. */
  missing(promptId: string, n: number): number[] {
    const own = this.lines.get(promptId)!;
    return Array.from({ length: n }, (_, i) => i).filter((i) => !own.has(i));
  }

  /** The line of a sample, as it will be written. */
  lineOf(prompt: GeneratePrompt, s: GeneratedSample): SampleLine {
    const reader = this.readers.get(prompt.id)!;
    const line: Omit<SampleLine, 'settings'> = {
      prompt_id: prompt.id,
      prompt: prompt.request.request,
      index: s.index,
      seed: s.seed,
      text: s.text,
      tokens: s.tokens,
      finish_reason: s.finishReason,
      fields: braceGroups(s.text),
    };
    const answer = reader.parse(s.text);
    if (answer !== undefined) line.answer = answer;
    if (reader.targetSet) line.valid = answer !== undefined && reader.targetSet.has(answer);
    if (reader.biography) line.biography = parseBiography(s.text);
    return { ...line, settings: this.settings };
  }

  /** Appends samples' lines in one write(2): whole lines or, if killed mid-write, one partial last line. */
  append(prompt: GeneratePrompt, samples: readonly GeneratedSample[]): void {
    if (samples.length === 0) return;
    const lines = samples.map((s) => this.lineOf(prompt, s));
    const buf = Buffer.from(lines.map((l) => `${JSON.stringify(l)}\n`).join(''), 'utf8');
    const before = fstatSync(this.fd).size;
    try {
      let off = 0;
      while (off < buf.length) off += writeSync(this.fd, buf, off);
    } catch (error) {
      try {
        ftruncateSync(this.fd, before);
      } catch {
        // the next run cuts a partial last line off anyway
      }
      throw new DiffuseError('IO', `cannot append to ${this.file} (${(error as Error).message}); the lines already there are intact: free space or fix the permissions and rerun to continue`, { cause: error });
    }
    const own = this.lines.get(prompt.id)!;
    for (const l of lines) own.set(l.index, l);
  }

  close(): void {
    fsyncSync(this.fd);
    closeSync(this.fd);
  }
}
