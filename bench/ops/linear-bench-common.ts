/**
 * What the CPU linear-algebra benchmarks share: timing through tinybench, the machine facts
 * recorded with every result, and bench/results/cpu-linear.json (or the file DIFFUSE_LINEAR_RESULTS
 * names, to keep another machine's figures beside it), where gemm.bench.ts and lora-linear.bench.ts
 * each write their own section.
 *
 * Every native().gemm call allocates its output C (and copies C in when accumulating), and on
 * a fresh allocation the first touch of each page faults: 15-20% of a 64 x 576 x 576 call. To
 * report the kernels rather than that, each timed call is paired with the same call at K = 0
 * (same allocation, same copy, same write of C, no multiplication) and the kernel time is the
 * difference of the two (medians, and separately the fastest calls). The raw times are
 * recorded too.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { Bench } from 'tinybench';

import { native, packageRoot } from '../../lib/native.js';

export const resultsFile = process.env.DIFFUSE_LINEAR_RESULTS ?? join(packageRoot, 'bench', 'results', 'cpu-linear.json');

export interface Machine {
  cpu: string;
  logicalCores: number;
  threads: number;
  isa: string;
  node: string;
  date: string;
  commit: string;
}

export function machine(): Machine {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: packageRoot, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: packageRoot, encoding: 'utf8' });
    if (dirty.trim()) commit += '+dirty';
  } catch {
    // not a git checkout: keep 'unknown'
  }
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    logicalCores: cpus().length,
    threads: native().threadCount(),
    isa: native().gemmIsa(),
    node: process.version,
    date: new Date().toISOString(),
    commit,
  };
}

export interface Timing {
  /** Median of the rounds' median milliseconds per call. */
  median: number;
  /**
   * Fastest single call over all rounds. Other sessions keep this machine's cores busy, so
   * medians mostly measure them; the fastest of a few hundred calls is what the kernel does
   * when it has the cores to itself.
   */
  best: number;
}

/**
 * Milliseconds per call of each task over `rounds` tinybench runs in alternating task order,
 * so that a burst of load from other processes does not land on one side of a comparison only.
 */
export async function measure(tasks: Map<string, () => void>, { rounds = 3, timeMs = 150 } = {}): Promise<Map<string, Timing>> {
  const medians = new Map<string, number[]>();
  const best = new Map<string, number>();
  const names = [...tasks.keys()];
  for (let round = 0; round < rounds; ++round) {
    const bench = new Bench({ time: timeMs, iterations: 5, warmupIterations: 2, warmupTime: 20, throws: true });
    for (const name of round % 2 === 0 ? names : [...names].reverse()) bench.add(name, tasks.get(name)!);
    await bench.run();
    for (const task of bench.tasks) {
      const r = task.result;
      if (r.state !== 'completed') throw new Error(`benchmark ${task.name} did not complete (${r.state})`);
      medians.set(task.name, [...(medians.get(task.name) ?? []), r.latency.p50]);
      best.set(task.name, Math.min(best.get(task.name) ?? Infinity, r.latency.min));
    }
  }
  const out = new Map<string, Timing>();
  for (const [name, values] of medians) out.set(name, { median: median(values), best: best.get(name)! });
  return out;
}

/** Runs body with the pool at `threads` threads, then puts the pool back as it was. */
export async function withThreads<T>(threads: number, body: () => Promise<T>): Promise<T> {
  const addon = native();
  const before = addon.threadCount();
  addon.setThreads(threads);
  try {
    return await body();
  } finally {
    addon.setThreads(before);
  }
}

/** The thread counts every benchmark runs: one (the kernels alone), then all. */
export function threadCounts(): number[] {
  return [1, native().threadCount()];
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Uniform values in [-1, 1), deterministic. */
export function filled(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; ++i) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = a / 2147483648 - 1;
  }
  return out;
}

/** Replaces one section of the results file, keeping the others. */
export function writeSection(section: string, value: unknown): void {
  const all: Record<string, unknown> = existsSync(resultsFile) ? JSON.parse(readFileSync(resultsFile, 'utf8')) : {};
  all[section] = value;
  mkdirSync(dirname(resultsFile), { recursive: true });
  writeFileSync(resultsFile, JSON.stringify(all, null, 2) + '\n');
}

export function printTable(rows: Record<string, string | number>[]): void {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]);
  const cell = (v: string | number) =>
    typeof v === 'string' || Number.isInteger(v) ? String(v) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : v >= 1 ? 2 : 3);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(cell(r[c])).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padStart(width[i])).join('  ');
  console.log(line(cols));
  for (const r of rows) console.log(line(cols.map((c) => String(cell(r[c])))));
}
