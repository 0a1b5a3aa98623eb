/**
 * Batched decoding of the paper's biography prompt on the default model: tokens/s at 1, 8, 64
 * and 256 concurrent samples, ours (model.generate's engine path, lib/eval/sample.ts) beside
 * llama.cpp's batched decode (bench/peers/llamacpp_batched.py: its examples/batched loop) on the
 * same GGUF, the same prompt token ids and the same threads, in one run. Every sample decodes
 * exactly --tokens tokens on both sides (end of turn is not a stop), at temperature 1.
 *
 * The ceiling beside them: decoding is memory-bound, so a step costs at least the bytes it reads
 * — every weight once (the engine's resident weights; llama.cpp reads the GGUF's blocks) plus
 * each sample's cached keys and values — over the memory bandwidth measured here by a
 * single-threaded copy (bytes read + written per second).
 *
 *   npx tsx bench/generate.bench.ts [--threads 2] [--tokens 32] [--batches 1,8,64,256]
 *                                   [--omp-wait-policy passive] [--python PATH]
 *                                   [--out bench/results/cpu-generate.json]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

import { drawSamples } from '../lib/eval/sample.js';
import { readGguf } from '../lib/formats/gguf.js';
import { promptTokensOf } from '../lib/generate/generate.js';
import { diffuseHome, ensureDefaultModel } from '../lib/model/default-model.js';
import { loadModel } from '../lib/model/load.js';
import { native } from '../lib/native.js';
import { Progress } from '../lib/progress.js';

const arg = (name: string, fallback: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback);
const threads = Number(arg('--threads', '2'));
const tokens = Number(arg('--tokens', '32'));
const batches = arg('--batches', '1,8,64,256').split(',').map(Number);
const python = arg('--python', process.env.DIFFUSE_PYTHON ?? join(diffuseHome(), 'pyenv', 'bin', 'python'));
const out = arg('--out', 'bench/results/cpu-generate.json');
// llama.cpp's OpenMP threads spin while they wait by default; on shared cores a spinning thread
// holds a core another process needs, and its decode ran 8-12x slower here. Passive waiting is
// what a shared machine needs (pass --omp-wait-policy active on a quiet one).
const ompWaitPolicy = arg('--omp-wait-policy', process.env.OMP_WAIT_POLICY ?? 'passive');

const gguf = await ensureDefaultModel({ progress: new Progress({ mode: 'silent' }) });
native().setThreads(threads);
const model = await loadModel(gguf, { device: 'cpu', threads, progress: new Progress({ mode: 'silent' }) });
const request = (JSON.parse(readFileSync('data/tasks/reference/prompts/ficticious-people/ficticious-people.json', 'utf8')) as { request: string }).request;
const prompt = promptTokensOf(model, request);
const c = model.config;

/** Single-threaded copy bandwidth, bytes read + written per second, best of 5 over 256 MiB. */
function copyBandwidth(): number {
  const n = (256 << 20) / 8;
  const a = new Float64Array(n).fill(1), b = new Float64Array(n);
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    b.set(a);
    best = Math.min(best, performance.now() - t0);
  }
  return (2 * n * 8) / (best / 1000);
}

/** Our decode tokens/s at B samples: the steps after the first, timed between progress calls. */
async function ours(B: number): Promise<number> {
  const stamps: number[] = [];
  let count = 0;
  for await (const _ of drawSamples(model, prompt, [], { n: B, maxTokens: tokens, batchSize: B, seed: 0, onProgress: () => stamps.push(performance.now()) })) count++;
  if (count !== B) throw new Error(`drew ${count} of ${B} samples`);
  return (B * (tokens - 1)) / ((stamps[stamps.length - 1] - stamps[0]) / 1000);
}

interface LlamaRow {
  batch: number;
  tokens_per_s: number;
  prefill_s: number;
}
function llama(): { rows: LlamaRow[]; system_info: string; llama_cpp_python: string } | undefined {
  if (!existsSync(python)) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'diffuse-gen-bench-'));
  writeFileSync(join(dir, 'ids.json'), JSON.stringify(prompt));
  execFileSync(python, ['bench/peers/llamacpp_batched.py', '--gguf', gguf, '--prompt-ids', join(dir, 'ids.json'), '--threads', String(threads), '--tokens', String(tokens), '--batches', ...batches.map(String), '--out', join(dir, 'llama.json')], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, OMP_WAIT_POLICY: ompWaitPolicy },
  });
  return JSON.parse(readFileSync(join(dir, 'llama.json'), 'utf8'));
}

/** The vector extensions the kernel reports (lscpu's flags), so a result names its machine. */
function cpuFlags(): string[] {
  const info = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const flags = /^flags\s*:(.*)$/m.exec(info)?.[1].trim().split(/\s+/) ?? [];
  return flags.filter((f) => /^(avx|fma|f16c|amx)/.test(f));
}

const bandwidth = copyBandwidth();
const weightBytes = model.native.info().weightBytes;
const file = await readGguf(gguf);
const ggufWeightBytes = file.tensors.reduce((s, t) => s + t.byteLength, 0);
/** KV bytes a step reads at B samples, midway through: each sample's prompt and own rows, K and V, every layer. */
const kvBytes = (B: number, elem: number) => B * (prompt.length + tokens / 2) * c.numLayers * 2 * c.numKvHeads * c.headDim * elem;
const load = loadavg()[0];

await ours(1); // warm-up
const oursRows: number[] = [];
for (const B of batches) {
  const tps = await ours(B);
  oursRows.push(tps);
  process.stderr.write(`diffuse   B=${String(B).padStart(4)}: ${tps.toFixed(1).padStart(8)} tokens/s decoding\n`);
}
model.dispose();
const peer = llama();

const rows = batches.map((B, i) => {
  const ourStep = weightBytes + kvBytes(B, 4);
  const theirStep = ggufWeightBytes + kvBytes(B, 2);
  return {
    batch: B,
    oursTokensPerSecond: oursRows[i],
    llamaCppTokensPerSecond: peer?.rows[i]?.tokens_per_s ?? null,
    ratio: peer ? oursRows[i] / peer.rows[i].tokens_per_s : null,
    oursBytesPerStep: ourStep,
    llamaCppBytesPerStep: theirStep,
    /** B tokens per step at the bandwidth: the most a step reading those bytes can do. */
    oursCeilingTokensPerSecond: (B * bandwidth) / ourStep,
    llamaCppCeilingTokensPerSecond: (B * bandwidth) / theirStep,
  };
});
process.stdout.write(`decode tokens/s, biography prompt (${prompt.length} tokens), ${tokens} tokens per sample, ${threads} threads; copy bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s\n`);
process.stdout.write('      B   diffuse  llama.cpp  ratio   ceiling (ours / llama.cpp bytes)\n');
for (const r of rows)
  process.stdout.write(
    `  ${String(r.batch).padStart(5)} ${r.oursTokensPerSecond.toFixed(1).padStart(9)} ${r.llamaCppTokensPerSecond === null ? '         —' : r.llamaCppTokensPerSecond.toFixed(1).padStart(10)} ${r.ratio === null ? '     ' : r.ratio.toFixed(2).padStart(6)}   ${r.oursCeilingTokensPerSecond.toFixed(0)} / ${r.llamaCppCeilingTokensPerSecond.toFixed(0)}\n`,
  );
const machine = { cpu: cpus()[0]?.model, cpuFlags: cpuFlags(), cores: cpus().length, threads, isa: native().gemmIsa(), loadAverage1m: load, date: new Date().toISOString(), commit: execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim() };
writeFileSync(
  out,
  `${JSON.stringify(
    {
      machine,
      model: gguf,
      promptTokens: prompt.length,
      tokensPerSample: tokens,
      copyBandwidthBytesPerSecond: bandwidth,
      oursWeightBytes: weightBytes,
      llamaCppWeightBytes: ggufWeightBytes,
      llamaCpp: peer ? { version: peer.llama_cpp_python, systemInfo: peer.system_info, ompWaitPolicy } : null,
      note: 'shared cores: noisy; both read the Q4_1 blocks every step (ours widens them to f32 inside the GEMM, llama.cpp multiplies them with Q8_1 activations); KV bytes assume fp32 (ours) and f16 (llama.cpp) caches',
      rows,
    },
    null,
    2,
  )}\n`,
);
process.stderr.write(`wrote ${out}\n`);
