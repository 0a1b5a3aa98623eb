/**
 * Progress reporting for long operations (downloads now; training and sampling later).
 *
 * A Progress writes to one stream (stderr by default) in one of three modes:
 * - 'bar': one line redrawn in place — label, a determinate bar, count/total, rate and ETA;
 * - 'lines': one plain line per event (start, a throttled update, done or failed), for logs,
 *   pipes and `--json` runs whose stdout must stay machine-readable;
 * - 'silent': nothing.
 * The default is 'bar' when the stream is a TTY (and not TERM=dumb) and JSON output was not
 * asked for, 'lines' otherwise.
 */

export type ProgressMode = 'bar' | 'lines' | 'silent';

/** The part of a writable stream progress needs (process.stderr has all of it). */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** Where progress goes (default process.stderr). */
  stream?: ProgressStream;
  /** Force a mode; by default chosen from the stream and `json`. */
  mode?: ProgressMode;
  /** JSON output was requested (`--json`): never draw a bar. */
  json?: boolean;
  /** 'lines' mode: the least time between two update lines of one task, ms (default 5000). */
  lineIntervalMs?: number;
  /** 'bar' mode: the least time between two redraws, ms (default 100). */
  redrawIntervalMs?: number;
  /** The clock, ms (default performance.now). */
  now?: () => number;
}

export interface TaskOptions {
  /** The total count when known; without it the task shows count and rate only. */
  total?: number;
  /** 'bytes' formats counts as kB/MB/GB; any other word, a plural ('steps'; default 'it'), is shown after the count. */
  unit?: string;
}

/** Chooses the mode for a stream: a bar on an interactive terminal unless JSON output was asked for. */
export function progressMode(stream: ProgressStream = process.stderr, json = false): ProgressMode {
  return stream.isTTY && !json && process.env.TERM !== 'dumb' ? 'bar' : 'lines';
}

/** The window the rate is measured over, ms: long enough to be steady, short enough to follow changes. */
const rateWindowMs = 5000;
/** Updates closer together than this share a rate sample, so per-chunk updates stay cheap. */
const sampleSpacingMs = 100;

export class Progress {
  readonly mode: ProgressMode;
  readonly stream: ProgressStream;
  readonly lineIntervalMs: number;
  readonly redrawIntervalMs: number;
  readonly now: () => number;
  /** The task whose bar is on screen ('bar' mode), so other output can clear and redraw it. */
  private drawn: ProgressTask | undefined;

  constructor(options: ProgressOptions = {}) {
    this.stream = options.stream ?? process.stderr;
    this.mode = options.mode ?? progressMode(this.stream, options.json ?? false);
    this.lineIntervalMs = options.lineIntervalMs ?? 5000;
    this.redrawIntervalMs = options.redrawIntervalMs ?? 100;
    this.now = options.now ?? (() => performance.now());
  }

  /** Starts a task; in 'lines' mode this writes its start line. */
  task(label: string, options: TaskOptions = {}): ProgressTask {
    return new ProgressTask(this, label, options);
  }

  /** Writes a line of text, keeping any bar on screen intact below it. */
  log(line: string): void {
    if (this.mode === 'silent') return;
    if (this.mode === 'bar' && this.drawn) {
      this.stream.write(`\r\x1b[K${line}\n`);
      this.drawn.redraw();
    } else this.stream.write(`${line}\n`);
  }

  /** @internal A task's line: drawn in place ('bar'), or written as a line of its own ('lines'). */
  show(task: ProgressTask, line: string): void {
    if (this.mode === 'bar') {
      this.drawn = task;
      this.stream.write(`\r${line}\x1b[K`);
    } else if (this.mode === 'lines') this.stream.write(`${line}\n`);
  }

  /** @internal A task's last line, replacing its bar. */
  finish(task: ProgressTask, line: string): void {
    if (this.mode === 'silent') return;
    if (this.mode === 'bar' && this.drawn === task) {
      this.stream.write(`\r\x1b[K${line}\n`);
      this.drawn = undefined;
    } else this.log(line);
  }

  get columns(): number {
    return this.stream.columns || 80;
  }
}

export class ProgressTask {
  readonly label: string;
  readonly unit: string;
  total: number | undefined;
  count = 0;
  private readonly progress: Progress;
  private readonly started: number;
  /** (time, count) samples, at most one per sampleSpacingMs, back to just past the rate window. */
  private samples: Array<[number, number]> = [];
  private lastUpdate: number;
  private lastOutput = -Infinity;
  private finished = false;
  private note: string | undefined;

  constructor(progress: Progress, label: string, options: TaskOptions) {
    this.progress = progress;
    this.label = label;
    this.unit = options.unit ?? 'it';
    this.total = options.total;
    this.started = progress.now();
    this.lastUpdate = this.started;
    this.samples.push([this.started, 0]);
    if (progress.mode === 'lines') {
      progress.show(this, `${label}: started${this.total !== undefined ? ` (${formatCount(this.total, this.unit)})` : ''}`);
      this.lastOutput = this.started;
    } else this.output(true);
  }

  /** Sets the count (and the total, when it becomes known or changes). */
  update(count: number, total?: number): void {
    if (this.finished) return;
    const now = this.progress.now();
    if (count < this.count) this.samples = [[now, count]]; // started over: the old rate no longer applies
    this.count = count;
    if (total !== undefined) this.total = total;
    this.lastUpdate = now;
    if (now - this.samples[this.samples.length - 1][0] >= sampleSpacingMs) this.samples.push([now, count]);
    while (this.samples.length > 1 && now - this.samples[1][0] >= rateWindowMs) this.samples.shift();
    this.output(false);
  }

  /** A short note shown after the status (a loss, say); it appears with the next update. */
  detail(note: string): void {
    this.note = note;
  }

  /** Adds to the count. */
  add(delta: number): void {
    this.update(this.count + delta);
  }

  /** Count per second over the last few seconds, or undefined before there is a measurable interval. */
  rate(): number | undefined {
    const [t0, c0] = this.samples[0];
    const elapsed = this.lastUpdate - t0;
    return elapsed > 0 ? ((this.count - c0) * 1000) / elapsed : undefined;
  }

  /** Seconds left at the current rate, when the total is known and the rate positive. */
  eta(): number | undefined {
    const rate = this.rate();
    if (this.total === undefined || !rate || rate <= 0) return undefined;
    return Math.max(0, (this.total - this.count) / rate);
  }

  /** Finishes the task: the bar is drawn complete and kept, or a done line is written. */
  done(note?: string): void {
    if (this.finished) return;
    this.finished = true;
    const seconds = (this.progress.now() - this.started) / 1000;
    const average = seconds > 0 ? (this.count / seconds) : undefined;
    const summary = `${formatCount(this.count, this.unit)} in ${formatDuration(seconds)}${average !== undefined ? ` (${formatRate(average, this.unit)})` : ''}${note ? `, ${note}` : ''}`;
    this.progress.finish(this, `${this.label}: done, ${summary}`);
  }

  /** Ends the task unfinished, saying why. */
  fail(reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.progress.finish(this, `${this.label}: failed: ${reason}`);
  }

  /** @internal Draws the bar again after another line was written over it. */
  redraw(): void {
    if (!this.finished) this.progress.show(this, this.renderBar());
  }

  private output(force: boolean): void {
    const mode = this.progress.mode;
    if (mode === 'silent') return;
    const now = this.progress.now();
    const interval = mode === 'bar' ? this.progress.redrawIntervalMs : this.progress.lineIntervalMs;
    const complete = this.total !== undefined && this.count >= this.total;
    if (!force && !complete && now - this.lastOutput < interval) return;
    if (mode === 'lines' && complete) return; // the done line reports completion
    this.lastOutput = now;
    this.progress.show(this, mode === 'bar' ? this.renderBar() : `${this.label}: ${this.renderStatus()}`);
  }

  /** "45% 42.1 MB/93.8 MB, 3.1 MB/s, ETA 0:17" (percent and ETA only with a total). */
  renderStatus(): string {
    const parts: string[] = [];
    const rate = this.rate();
    const eta = this.eta();
    if (this.total !== undefined && this.total > 0) {
      parts.push(`${Math.floor((100 * Math.min(this.count, this.total)) / this.total)}% ${formatCount(this.count, this.unit, this.total)}/${formatCount(this.total, this.unit)}`);
    } else parts.push(formatCount(this.count, this.unit));
    if (rate !== undefined) parts.push(formatRate(rate, this.unit));
    if (eta !== undefined) parts.push(`ETA ${formatDuration(eta)}`);
    return parts.join(', ') + (this.note ? ` · ${this.note}` : '');
  }

  /** "label [########------] 45% 42.1 MB/93.8 MB, 3.1 MB/s, ETA 0:17", fitted to the terminal. */
  renderBar(): string {
    const status = this.renderStatus();
    const columns = this.progress.columns;
    // Room for the status as it usually grows (rate and ETA appear), so the bar keeps its width.
    const noteLength = this.note ? this.note.length + 3 : 0;
    const room = columns - 1 - this.label.length - Math.max(status.length - noteLength, 44) - 4;
    if (this.total === undefined || this.total <= 0 || room < 10) return `${this.label} ${status}`.slice(0, columns - 1);
    const width = Math.min(40, room);
    const filled = Math.round((width * Math.min(this.count, this.total)) / this.total);
    return `${this.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${status}`.slice(0, columns - 1);
  }
}

/** Byte counts in SI units, the way download sizes are usually quoted: 512 B, 1.5 kB, 93.8 MB. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${Math.round(bytes)} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 999.95 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** A count in its unit; with `of`, a byte count is given without its unit when both share it. */
export function formatCount(count: number, unit: string, of?: number): string {
  if (unit !== 'bytes') return of !== undefined ? `${count}` : `${count} ${unit}`;
  if (of !== undefined) {
    const whole = formatBytes(of);
    const part = formatBytes(count);
    if (part.split(' ')[1] === whole.split(' ')[1]) return part.split(' ')[0];
    return part;
  }
  return formatBytes(count);
}

/** A rate per second; slow rates of items read better as seconds per item (training steps). */
export function formatRate(perSecond: number, unit: string): string {
  if (unit === 'bytes') return `${formatBytes(perSecond)}/s`;
  if (perSecond > 0 && perSecond < 1) return `${(1 / perSecond).toFixed(1)} s each`;
  return `${perSecond.toFixed(perSecond < 10 ? 2 : 1)} ${unit}/s`;
}

/** Seconds as m:ss or h:mm:ss. */
export function formatDuration(seconds: number): string {
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}
