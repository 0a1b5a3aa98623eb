/**
 * The ceiling our benchmarks report against: an external BLAS (MKL through torch, OpenBLAS
 * through numpy, from the reference environment) timed on the same shapes and threads in the
 * same run, never our own kernel. bench/blas_ceiling.py does the timing.
 *
 * With several threads the ceiling of a shape is the larger of the libraries' multi-threaded
 * best and `threads` times their single-threaded best (perfect scaling): on a shared machine a
 * multi-threaded BLAS call whose threads spin at a barrier rarely runs undisturbed, and a
 * ceiling must not sink because the machine is busy.
 *
 * With DIFFUSE_CPU_ISA=avx2 (our AVX2 kernels on an AVX-512 machine) the libraries are held to
 * AVX2 as well (referenceIsaCap()), like for like.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { diffuseHome } from '../lib/model/default-model.js';

export type GemmKind = 'nt' | 'nn';
export interface CeilingShape {
  kind: GemmKind;
  M: number;
  N: number;
  K: number;
}
export interface LibraryTiming {
  bestGflops: number;
  medianGflops: number;
  calls: number;
}
export interface CeilingRow extends CeilingShape {
  torch: LibraryTiming;
  numpy: LibraryTiming;
  /** The libraries on one thread (measured only when threads > 1). */
  single?: { torch: LibraryTiming; numpy: LibraryTiming };
}
export interface Ceiling {
  python: string;
  threads: number;
  torch: string;
  numpy: string;
  shapes: CeilingRow[];
}

/** The reference environment's python: DIFFUSE_PYTHON, else $DIFFUSE_HOME/pyenv. */
export function referencePython(): string | undefined {
  const venv = join(diffuseHome(), 'pyenv', 'bin', 'python');
  return process.env.DIFFUSE_PYTHON ?? (existsSync(venv) ? venv : undefined);
}

/**
 * Times the shapes in torch and numpy on `threads` threads for about `seconds` each; throws,
 * saying how to make the environment, when there is no python with both.
 */
export function measureCeiling(shapes: CeilingShape[], threads: number, seconds = 0.5): Ceiling {
  const multi = runScript(shapes, threads, seconds);
  if (threads > 1) {
    const single = runScript(shapes, 1, seconds);
    multi.shapes.forEach((row, i) => (row.single = { torch: single.shapes[i].torch, numpy: single.shapes[i].numpy }));
  }
  return multi;
}

/**
 * The environment that holds the reference libraries to AVX2 when ours are (DIFFUSE_CPU_ISA=avx2
 * on an AVX-512 machine): MKL, OpenBLAS and torch's oneDNN. Empty otherwise.
 */
export function referenceIsaCap(): Record<string, string> {
  return process.env.DIFFUSE_CPU_ISA === 'avx2' ? { MKL_ENABLE_INSTRUCTIONS: 'AVX2', OPENBLAS_CORETYPE: 'Haswell', ONEDNN_MAX_CPU_ISA: 'AVX2' } : {};
}

function runScript(shapes: CeilingShape[], threads: number, seconds: number): Ceiling {
  const python = referencePython();
  if (!python) throw new Error(`no reference python: run tools/python/setup-env.sh (it makes ${join(diffuseHome(), 'pyenv')}) or set DIFFUSE_PYTHON`);
  const script = join(import.meta.dirname, 'blas_ceiling.py');
  const r = spawnSync(python, [script, String(threads), String(seconds), JSON.stringify(shapes.map((s) => [s.kind, s.M, s.N, s.K]))], {
    env: { ...process.env, ...referenceIsaCap() },
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`${python} ${script} failed (${r.status ?? r.signal}): ${r.stderr.trim().split('\n').slice(-5).join('\n')}`);
  return { python, ...(JSON.parse(r.stdout) as Omit<Ceiling, 'python'>) };
}

/** The ceiling on a shape: the better library's fastest call, or `threads` times its single-threaded one. */
export function bestOf(row: CeilingRow, threads: number): number {
  const multi = Math.max(row.torch.bestGflops, row.numpy.bestGflops);
  return row.single ? Math.max(multi, threads * Math.max(row.single.torch.bestGflops, row.single.numpy.bestGflops)) : multi;
}
