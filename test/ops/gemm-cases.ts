/**
 * The GEMM shapes the tests check, shared by the in-process test and the child processes that
 * pin another instruction set (DIFFUSE_CPU_ISA is read once, when the addon first multiplies).
 * They cover every path of cpu/gemm_kernels.h: dot (nt with few rows, narrow N), direct (nn /
 * tn with few rows), packed (the rest), single and multi-threaded splits, edges that are not
 * tile multiples, K blocks, the K extension (also straddling a K block) and beta = 1.
 */
import { native } from '../../lib/native.js';
import { type GemmKind, randomArray, refGemm, relError, rng } from '../reference/linear.js';

export interface GemmCase {
  kind: GemmKind;
  M: number;
  N: number;
  K: number;
  /** K-extension width (nt, nn). */
  K2?: number;
  /** Accumulate onto a random C (beta = 1). */
  acc?: boolean;
}

const c = (kind: GemmKind, M: number, N: number, K: number, K2 = 0, acc = false): GemmCase => ({ kind, M, N, K, K2, acc });

export const gemmCases: GemmCase[] = [
  // single elements, decode rows, K = 1, K = 0
  c('nt', 1, 1, 1), c('nn', 1, 1, 1), c('tn', 1, 1, 1),
  c('nt', 1, 333, 70), c('nn', 1, 333, 70, 0, true), c('tn', 1, 333, 70),
  c('nt', 29, 31, 1), c('nn', 29, 31, 1), c('tn', 29, 31, 1),
  c('nt', 5, 7, 0, 0, true), c('nn', 6, 9, 0, 0, true),
  // dot path: nt with few rows, and narrow N for nt / nn
  c('nt', 3, 101, 45, 0, true), c('nt', 16, 75, 130), c('nt', 70, 5, 77), c('nn', 70, 3, 77, 0, true), c('nt', 45, 24, 19),
  // direct path: few rows, B read in place
  c('nn', 4, 130, 45), c('tn', 3, 97, 130, 0, true), c('tn', 16, 70, 300), c('nn', 13, 200, 33, 0, true),
  // packed path, edges off the tile sizes, several K blocks, two threads
  c('nt', 17, 25, 9), c('nn', 17, 49, 31), c('tn', 17, 49, 31, 0, true), c('tn', 40, 3, 50),
  c('nt', 37, 53, 300, 0, true), c('nn', 61, 97, 260), c('tn', 70, 61, 257),
  c('nt', 130, 210, 300), c('nn', 130, 210, 300, 0, true), c('tn', 130, 150, 200),
  // K extension: LoRA ranks 1, 3, 5, 16, on every path; 100 + 200 straddles a K block
  c('nt', 1, 60, 40, 3), c('nt', 9, 70, 50, 5, true), c('nt', 70, 4, 50, 16), c('nt', 70, 90, 50, 1),
  c('nt', 130, 200, 300, 16, true), c('nt', 40, 50, 100, 200),
  c('nn', 1, 60, 40, 3), c('nn', 9, 70, 50, 5, true), c('nn', 70, 4, 50, 16), c('nn', 70, 90, 50, 1),
  c('nn', 130, 200, 300, 16, true), c('nn', 40, 50, 100, 200),
];

/** `count` seeded random shapes: sizes 1..150 (K up to 400), every kind, K extension and beta = 1 at random. */
export function randomGemmCases(seed: number, count: number): GemmCase[] {
  const next = rng(seed);
  const size = (max: number) => 1 + Math.floor(next() * next() * max);  // skewed towards small
  const kinds: GemmKind[] = ['nt', 'nn', 'tn'];
  return Array.from({ length: count }, () => {
    const kind = kinds[Math.floor(next() * 3)];
    const K2 = kind !== 'tn' && next() < 0.5 ? size(20) : 0;
    return c(kind, size(150), size(150), size(400), K2, next() < 0.5);
  });
}

export interface GemmCaseResult {
  name: string;
  error: number;
}

export function caseName(g: GemmCase): string {
  return `${g.kind} M=${g.M} N=${g.N} K=${g.K}${g.K2 ? ` K2=${g.K2}` : ''}${g.acc ? ' beta=1' : ''}`;
}

/** The fixed cases and 24 random ones. */
export const allGemmCases: GemmCase[] = [...gemmCases, ...randomGemmCases(2024, 24)];

/** Runs every case through native().gemm and returns the relative error of each. */
export function runGemmCases(cases: GemmCase[] = allGemmCases, seed = 1): GemmCaseResult[] {
  const next = rng(seed);
  return cases.map((g) => {
    const { kind, M, N, K } = g;
    const A = randomArray(M * K, next);
    const B = randomArray(N * K, next);
    const C0 = g.acc ? randomArray(M * N, next) : null;
    const extra = g.K2 ? { A2: randomArray(M * g.K2, next), B2: randomArray(N * g.K2, next), K2: g.K2 } : undefined;
    const out = native().gemm(kind, M, N, K, A, B, C0, extra);
    return { name: caseName(g), error: relError(out, refGemm(kind, M, N, K, A, B, C0, extra)) };
  });
}
