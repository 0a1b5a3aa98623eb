/**
 * The live round trip through llama.cpp, run only when asked (DIFFUSE_LLAMA_CPP_CHECK=1) with
 * the reference Python environment (tools/python/setup-env.sh; DIFFUSE_PYTHON overrides its
 * path): an adapter on the default model (B random, so it moves the log-probs) exported with
 * `diffuse export --format gguf-lora`, loaded by llama-cpp-python with the base GGUF, and its
 * target log-probs compared with ours. On an F32 copy of the base (tools/reference/
 * llamacpp_lora_logprobs.py --dequantize: the same weights, widened) both compute in f32 and
 * must agree within 1e-2 nats per sequence, with and without the adapter, while the adapter
 * moves them by more than 0.1. On the Q4_1 file llama.cpp multiplies Q8_1-quantized
 * activations and differs from exact f32 arithmetic by tenths of a nat even without an adapter
 * (test/fixtures/reference/smollm2-q4_1-logprobs.json records the same), so there only gross
 * disagreement (a nat) fails.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { saveAdapter } from '../../lib/adapters/peft.js';
import { diffuseHome, ensureDefaultModel } from '../../lib/model/default-model.js';
import { loadModel } from '../../lib/model/load.js';
import { Progress } from '../../lib/progress.js';
import { runCli } from '../cli/run.js';
import { random } from '../helpers/tiny-model.js';

const live = process.env.DIFFUSE_LLAMA_CPP_CHECK === '1';
const python = process.env.DIFFUSE_PYTHON ?? join(diffuseHome(), 'pyenv', 'bin', 'python');
const script = new URL('../../tools/reference/llamacpp_lora_logprobs.py', import.meta.url).pathname;

const requests = [
  { request: 'Name a fruit. Answer with one word in braces, like {fruit}.', targets: ['{apple}', '{banana}', '{mango}', '{kiwi}'] },
  { request: 'Pick a number from 1 to 10.', targets: ['{1}', '{4}', '{7}', '{10}'] },
];

(live ? describe : describe.skip)('a GGUF LoRA through llama.cpp (DIFFUSE_LLAMA_CPP_CHECK=1)', () => {
  it('gives llama.cpp the target log-probs diffuse computes', async () => {
    expect(existsSync(python)).toBe(true);
    const dir = await mkdtemp(join(tmpdir(), 'diffuse-llamacpp-lora-'));
    const q41 = await ensureDefaultModel({ progress: new Progress({ mode: 'silent' }) });
    await mkdir(join(diffuseHome(), 'reference'), { recursive: true });
    const f32 = join(diffuseHome(), 'reference', 'SmolLM2-135M-Instruct.F32-from-Q4_1.gguf');
    if (!existsSync(f32)) execFileSync(python, [script, '--dequantize', q41, '--to', f32], { stdio: 'inherit' });

    const rows: { base: string; ours: number[]; oursBase: number[]; llama: number[]; llamaBase: number[] }[] = [];
    for (const [name, base] of [['F32', f32], ['Q4_1', q41]] as const) {
      const model = await loadModel(base, { device: 'cpu' });
      try {
        const adapter = await model.createAdapter({ rank: 4, alpha: 8, seed: 2 });
        const rng = random(21);
        for (const t of adapter.tensors())
          if (t.name.endsWith('lora_B')) await adapter.setTensor(t.name, Float32Array.from({ length: t.shape[0] * t.shape[1] }, () => 0.05 * rng.normal()));
        const peft = join(dir, `peft-${name}`);
        await saveAdapter(adapter, peft);
        const exported = join(dir, `adapter-${name}.gguf`);
        expect((await runCli(['export', '--model', base, '--adapter', peft, '--format', 'gguf-lora', '--out', exported])).code).toBe(0);
        const prepared = model.prepare(requests);
        const sequences = prepared.flatMap((p) => p.sequences.map((s) => ({ prompt: p.promptTokens, target: s.tokens })));
        const ours = (await model.targetDistributions(requests, { adapter })).flatMap((d) => d.targets.map((t) => t.logprob));
        const oursBase = (await model.targetDistributions(requests)).flatMap((d) => d.targets.map((t) => t.logprob));
        const input = join(dir, `in-${name}.json`), output = join(dir, `out-${name}.json`);
        await writeFile(input, JSON.stringify({ gguf: base, loras: [null, exported], threads: 2, sequences }));
        execFileSync(python, [script, '--input', input, '--out', output], { stdio: 'inherit' });
        const [llamaBase, llama] = (JSON.parse(await readFile(output, 'utf8')) as { logprobs: number[][] }).logprobs;
        rows.push({ base: name, ours, oursBase, llama, llamaBase });
        adapter.dispose();
      } finally {
        model.dispose();
      }
    }
    const gap = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i])));
    const shift = (r: (typeof rows)[number], side: 'ours' | 'llama') => r[side].map((x, i) => x - r[side === 'ours' ? 'oursBase' : 'llamaBase'][i]);
    const [f, q] = rows;
    const report = {
      f32: { withAdapter: gap(f.ours, f.llama), base: gap(f.oursBase, f.llamaBase), adapterShift: gap(shift(f, 'ours'), shift(f, 'llama')), largestShift: Math.max(...shift(f, 'ours').map(Math.abs)) },
      q4_1: { withAdapter: gap(q.ours, q.llama), base: gap(q.oursBase, q.llamaBase), adapterShift: gap(shift(q, 'ours'), shift(q, 'llama')) },
    };
    process.stdout.write(`llama.cpp vs diffuse, largest |Δ log p| (nats): ${JSON.stringify(report)}\n`);
    expect(report.f32.largestShift).toBeGreaterThan(0.1);
    expect(report.f32.withAdapter).toBeLessThan(1e-2);
    expect(report.f32.base).toBeLessThan(1e-2);
    expect(report.q4_1.withAdapter).toBeLessThan(1);
  }, 600_000);
});
