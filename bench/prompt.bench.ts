/**
 * Prompt processing (prefill) of the default model: ours vs llama.cpp on the same GGUF, the
 * same token ids and the same thread count, alternating in one run. Each side computes the
 * logits of the last position only. llama.cpp runs through bench/peers/llamacpp_prompt.py in
 * the reference Python environment (tools/python/setup-env.sh); without it, ours alone.
 *
 *   npx tsx bench/prompt.bench.ts [--threads 2] [--rounds 3] [--repeats 3] [--python PATH]
 *                                 [--out bench/results/cpu-prompt.json]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';

import { diffuseHome, ensureDefaultModel } from '../lib/model/default-model.js';
import { loadModel } from '../lib/model/load.js';
import { native } from '../lib/native.js';
import { Progress } from '../lib/progress.js';

const arg = (name: string, fallback: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback);
const threads = Number(arg('--threads', '2'));
const rounds = Number(arg('--rounds', '3'));
const repeats = Number(arg('--repeats', '3'));
const lengths = [64, 256, 512];
const python = arg('--python', process.env.DIFFUSE_PYTHON ?? join(diffuseHome(), 'pyenv', 'bin', 'python'));
const out = arg('--out', 'bench/results/cpu-prompt.json');

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

interface LlamaRun {
  results: { prompt_tokens: number; prompt_token_ids: number[]; ms_per_run: { all: number[] } }[];
}

function runLlama(): LlamaRun | undefined {
  if (!existsSync(python)) return undefined;
  const file = join(mkdtempSync(join(tmpdir(), 'diffuse-pp-')), 'llama.json');
  execFileSync(python, ['bench/peers/llamacpp_prompt.py', '--gguf', gguf, '--threads', String(threads), '--repeats', String(repeats), '--lengths', ...lengths.map(String), '--out', file], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return JSON.parse(readFileSync(file, 'utf8')) as LlamaRun;
}

const gguf = await ensureDefaultModel({ progress: new Progress({ mode: 'silent' }) });
native().setThreads(threads);
const model = await loadModel(gguf, { device: 'cpu', threads, progress: new Progress({ mode: 'silent' }) });

/** Our prefill of `ids`: one forward over the chain, the last position's logits only. */
async function ours(ids: number[]): Promise<number> {
  const t0 = performance.now();
  await model.native.forward({
    tokens: Int32Array.from(ids),
    parents: Int32Array.from(ids.map((_, i) => i - 1)),
    edgeRows: Int32Array.from([ids.length - 1]),
    edgeTokens: Int32Array.from([ids[0]]),
  });
  return ids.length / ((performance.now() - t0) / 1000);
}

const oursRuns = new Map<number, number[]>(lengths.map((l) => [l, []]));
const llamaRuns = new Map<number, number[]>(lengths.map((l) => [l, []]));
let ids = new Map<number, number[]>(lengths.map((l) => [l, Array.from({ length: l }, (_, i) => 100 + ((i * 7919) % 40000))]));
for (let r = 0; r < rounds; r++) {
  const llama = runLlama();
  if (llama) {
    ids = new Map(llama.results.map((x) => [x.prompt_tokens, x.prompt_token_ids]));
    for (const x of llama.results) llamaRuns.get(x.prompt_tokens)!.push(...x.ms_per_run.all.map((ms) => (x.prompt_tokens * 1000) / ms));
  }
  for (const l of lengths) {
    await ours(ids.get(l)!);
    for (let i = 0; i < repeats; i++) oursRuns.get(l)!.push(await ours(ids.get(l)!));
  }
  process.stderr.write(`round ${r + 1}/${rounds} done\n`);
}
model.dispose();

const rows = lengths.map((l) => ({
  length: l,
  oursTokensPerSecond: median(oursRuns.get(l)!),
  oursRuns: oursRuns.get(l)!,
  llamaCppTokensPerSecond: llamaRuns.get(l)!.length ? median(llamaRuns.get(l)!) : null,
  llamaCppRuns: llamaRuns.get(l)!,
}));
process.stdout.write(`prefill tokens/s, ${threads} threads (median of ${rounds}×${repeats})\n  length   diffuse   llama.cpp   ratio\n`);
for (const r of rows)
  process.stdout.write(
    `  ${String(r.length).padStart(6)} ${r.oursTokensPerSecond.toFixed(0).padStart(9)} ${r.llamaCppTokensPerSecond === null ? '        —' : r.llamaCppTokensPerSecond.toFixed(0).padStart(11)} ${r.llamaCppTokensPerSecond === null ? '' : (r.oursTokensPerSecond / r.llamaCppTokensPerSecond).toFixed(2).padStart(7)}\n`,
  );
const machine = { cpu: cpus()[0]?.model, threads, isa: native().gemmIsa(), date: new Date().toISOString(), commit: execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim() };
writeFileSync(out, `${JSON.stringify({ machine, note: 'llama.cpp built without AMX (it crashes on these machines); ours computes in f32 from the dequantised weights, llama.cpp on the Q4_1 blocks', rows }, null, 2)}\n`);
process.stderr.write(`wrote ${out}\n`);
