/**
 * What the kernel benchmarks (attention, log-probs, sampling) share: median timing through
 * tinybench in alternating task order, seeded inputs, the machine line, and a plain table.
 *
 * native().ops() copies every input into backend memory on each call (the 49152 x 576 LM head
 * included: 113 MB, twice, into freshly mapped pages: 100-250 ms). So each benchmark also times
 * a "transfer twin", a call that moves the same arrays and does next to no work, and reports the
 * difference of the two medians as the kernel's time. Both raw medians are printed too. Where
 * the twin is most of the call, the difference is only as good as the many samples behind it.
 */
import { cpus } from 'node:os';
import { Bench } from 'tinybench';

import { native } from '../../lib/native.js';

/**
 * Median milliseconds per call of each task: the median over `rounds` tinybench runs of each
 * run's median, the tasks in alternating order, so that load from other processes on shared
 * cores does not land on one side of a comparison only.
 */
export async function medianMs(tasks: Map<string, () => unknown>, rounds = 3, timeMs = 200, iterations = 3): Promise<Map<string, number>> {
  const perRound = new Map<string, number[]>();
  const names = [...tasks.keys()];
  for (let round = 0; round < rounds; ++round) {
    const bench = new Bench({ time: timeMs, iterations, warmupIterations: 1, throws: true });
    for (const name of round % 2 === 0 ? names : [...names].reverse()) bench.add(name, tasks.get(name)!);
    await bench.run();
    for (const task of bench.tasks) {
      if (task.result.state !== 'completed') throw new Error(`benchmark ${task.name} did not complete (${task.result.state})`);
      perRound.set(task.name, [...(perRound.get(task.name) ?? []), task.result.latency.p50]);
    }
  }
  return new Map([...perRound].map(([name, v]) => [name, median(v)]));
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** n seeded normals times scale (a fixed LCG feeding Box-Muller). */
export function normals(n: number, scale: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  const uniform = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 1) / 4294967297;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const t = 2 * Math.PI * uniform();
    out[i] = scale * r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = scale * r * Math.sin(t);
  }
  return out;
}

export function machineLine(): string {
  const addon = native();
  const isa = process.env.DIFFUSE_CPU_ISA ? `capped at ${process.env.DIFFUSE_CPU_ISA}` : 'best available';
  return `${cpus()[0]?.model ?? 'unknown CPU'}, ${addon.threadCount()} threads, gemm ${addon.gemmIsa()}, kernel ISA ${isa}, node ${process.version}`;
}

export function printTable(rows: Record<string, string | number>[]): void {
  const cols = Object.keys(rows[0] ?? {});
  const cell = (v: string | number) => (typeof v !== 'number' || Number.isInteger(v) ? String(v) : Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(cell(r[c])).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padStart(width[i])).join('  ');
  console.log(line(cols));
  for (const r of rows) console.log(line(cols.map((c) => String(cell(r[c])))));
}
