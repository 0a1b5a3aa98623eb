/**
 * Shared by the CUDA tests: whether a GPU is there (and why not), seeded random inputs rounded
 * to bf16 (so the CPU and the GPU compute on identical values and the error measures the GPU's
 * arithmetic), and the float64 relative error used everywhere: ||out - ref|| / ||ref||, with
 * NaN never passing.
 */
import { native } from '../../lib/native.js';

const status = native().cudaStatus();

/** `describe` when a CUDA device is visible; otherwise `describe.skip`, with the reason in the title. */
export function describeCuda(name: string, body: () => void): void {
  if (status.available) describe(name, body);
  else describe.skip(`${name} (skipped: ${status.reason})`, body);
}

export { rng } from '../reference/linear.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** x rounded to the nearest bf16 (ties to even), as an f32. */
export function bf16(x: number): number {
  f32[0] = x;
  const u = u32[0];
  u32[0] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 0) & 0xffff0000;
  return f32[0];
}

export function normals(next: () => number, n: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u1 = 1 - next();
    const u2 = next();
    out[i] = bf16(std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2));
  }
  return out;
}

export function uniforms(next: () => number, n: number, lo: number, hi: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = bf16(lo + (hi - lo) * next());
  return out;
}

export function ints(next: () => number, n: number, lo: number, hi: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + Math.floor(next() * (hi - lo + 1));
  return out;
}

export function relError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length || ref.length === 0) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    if (Number.isNaN(out[i]) || Number.isNaN(ref[i])) return Infinity;
    num += (out[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return den === 0 ? (num === 0 ? 0 : Infinity) : Math.sqrt(num / den);
}

/**
 * A prompt chain of `prompt` rows and `nodes` trie rows after it (parents earlier rows, mostly
 * the one just before), with root-first key lists as the engine builds them.
 */
export function forest(next: () => number, prompt: number, nodes: number) {
  const parents: number[] = [];
  for (let r = 0; r < prompt + nodes; r++) {
    let p = r - 1;
    if (r > prompt) {
      const c = next();
      if (c < 0.3) p = prompt - 1;
      else if (c < 0.5) p = prompt - 1 + Math.floor(next() * (r - prompt + 1));
    }
    parents.push(p);
  }
  const offsets = [0];
  const keys: number[] = [];
  for (let r = 0; r < parents.length; r++) {
    const path: number[] = [];
    for (let n = r; n >= 0; n = parents[n]) path.push(n);
    keys.push(...path.reverse());
    offsets.push(keys.length);
  }
  return { parents: Int32Array.from(parents), keyOffsets: Int32Array.from(offsets), keyRows: Int32Array.from(keys) };
}
