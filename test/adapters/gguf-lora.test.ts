/**
 * llama.cpp's GGUF LoRA format: `diffuse export` of a PEFT adapter writes what llama.cpp's own
 * convert_lora_to_gguf.py wrote for it (test/fixtures/gguf-lora, made by
 * tools/reference/gguf_lora_fixture.py) — metadata, tensor names, order, dims, types and every
 * byte of data, Q/K rows of lora_b permuted as in the base GGUF — and reading that file back
 * gives the adapter PEFT's files hold.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { readGgufLora } from '../../lib/adapters/gguf-lora.js';
import { readAdapterWeights } from '../../lib/adapters/peft.js';
import { metaNumber, metaString, readGguf, type GgufFile } from '../../lib/formats/gguf.js';
import { loadModel } from '../../lib/model/load.js';
import { runCli } from '../cli/run.js';
import { makeTinyModel } from '../helpers/tiny-model.js';
import { writeGgufModel } from '../helpers/write-gguf.js';
import { writeHfDirectory } from '../helpers/write-safetensors.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';

const fixture = new URL('../fixtures/gguf-lora/', import.meta.url).pathname;
const tiny = makeTinyModel();
let dir: string;
let basePath: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-gguf-lora-'));
  basePath = await writeTinyChatModel();
});

async function tensorBytes(g: GgufFile): Promise<Map<string, Buffer>> {
  const bytes = await readFile(g.path);
  return new Map(g.tensors.map((t) => [t.name, bytes.subarray(t.offset, t.offset + t.byteLength)]));
}

describe('GGUF LoRA adapters', () => {
  it('exports a PEFT adapter exactly as llama.cpp’s converter does', async () => {
    const out = join(dir, 'ours.gguf');
    const r = await runCli(['export', '--model', basePath, '--adapter', join(fixture, 'peft'), '--format', 'gguf-lora', '--out', out, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ architecture: 'llama', permutedQk: true, rank: 4, alpha: 8 });
    const [ours, theirs] = await Promise.all([readGguf(out), readGguf(join(fixture, 'adapter.gguf'))]);
    for (const key of ['general.architecture', 'general.type', 'adapter.type', 'general.quantization_version']) expect(ours.metadata.get(key)).toEqual(theirs.metadata.get(key));
    expect(metaString(ours, 'general.type')).toBe('adapter');
    expect(metaNumber(ours, 'adapter.lora.alpha')).toBe(metaNumber(theirs, 'adapter.lora.alpha'));
    expect(ours.tensors.map((t) => [t.name, t.dims, t.type])).toEqual(theirs.tensors.map((t) => [t.name, t.dims, t.type]));
    expect(ours.dataOffset % 32).toBe(0);
    const [a, b] = await Promise.all([tensorBytes(ours), tensorBytes(theirs)]);
    for (const [name, bytes] of b) expect({ name, same: a.get(name)!.equals(bytes) }).toEqual({ name, same: true });

    const f16 = join(dir, 'ours-f16.gguf');
    expect((await runCli(['export', '--model', basePath, '--adapter', join(fixture, 'peft'), '--out', f16, '--dtype', 'f16'])).code).toBe(0);
    expect((await readGguf(f16)).tensors.every((t) => t.type === 'F16')).toBe(true);
  });

  it('exports for a Hugging Face base as llama.cpp would convert it: Llama permuted, Qwen2 not', async () => {
    const llamaDir = join(dir, 'hf-llama');
    await writeHfDirectory(llamaDir, tiny);
    const out = join(dir, 'from-hf.gguf');
    expect((await runCli(['export', '--model', llamaDir, '--adapter', join(fixture, 'peft'), '--out', out])).code).toBe(0);
    const [a, b] = await Promise.all([readGguf(out).then(tensorBytes), readGguf(join(fixture, 'adapter.gguf')).then(tensorBytes)]);
    for (const [name, bytes] of b) expect({ name, same: a.get(name)!.equals(bytes) }).toEqual({ name, same: true });

    const qwenDir = join(dir, 'hf-qwen2');
    await writeHfDirectory(qwenDir, makeTinyModel({ bias: true }), { modelType: 'qwen2' });
    const qwen = join(dir, 'qwen2.gguf');
    const r = await runCli(['export', '--model', qwenDir, '--adapter', join(fixture, 'peft'), '--out', qwen, '--json']);
    expect(JSON.parse(r.stdout)).toMatchObject({ architecture: 'qwen2', permutedQk: false });
    const peft = await readAdapterWeights(join(fixture, 'peft'), tiny.config, 'tiny');
    const q = (await readGgufLora(qwen, { config: tiny.config, architecture: 'qwen2', permutedQk: false }, 'tiny')).tensors;
    const key = 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight';
    expect(Array.from(q.get(key)!)).toEqual(Array.from(peft.tensors.get(key)!));
    const raw = (await tensorBytes(await readGguf(qwen))).get('blk.1.attn_q.weight.lora_b')!;
    expect(Array.from(new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)))).toEqual(Array.from(peft.tensors.get(key)!));
  });

  it('reads llama.cpp’s file back as the PEFT adapter, and runs it as the PEFT one', async () => {
    const base = { config: tiny.config, architecture: 'llama', permutedQk: true };
    const fromGguf = await readGgufLora(join(fixture, 'adapter.gguf'), base, 'tiny');
    const fromPeft = await readAdapterWeights(join(fixture, 'peft'), tiny.config, 'tiny');
    expect(fromGguf.config).toMatchObject({ rank: 4, alpha: 8 });
    expect(fromGguf.modules).toEqual(fromPeft.modules);
    expect([...fromGguf.tensors.keys()].sort()).toEqual([...fromPeft.tensors.keys()].sort());
    for (const [key, values] of fromPeft.tensors) expect({ key, values: Array.from(fromGguf.tensors.get(key)!) }).toEqual({ key, values: Array.from(values) });

    const model = await loadModel(basePath, { device: 'cpu' });
    try {
      const [g, p] = await Promise.all([model.loadAdapter(join(fixture, 'adapter.gguf')), model.loadAdapter(join(fixture, 'peft'))]);
      const request = { tokens: [1, 5, 9, 2, 7] };
      const batch = { tokens: Int32Array.from(request.tokens), parents: Int32Array.from(request.tokens, (_, i) => i - 1), edgeRows: Int32Array.from([3, 4]), edgeTokens: Int32Array.from([7, 11]) };
      const [lg, lp, l0] = await Promise.all([model.native.forward(batch, g.native), model.native.forward(batch, p.native), model.native.forward(batch)]);
      expect(Array.from(lg.edgeLogProbs)).toEqual(Array.from(lp.edgeLogProbs));
      expect(Math.max(...Array.from(lg.edgeLogProbs, (x, i) => Math.abs(x - l0.edgeLogProbs[i])))).toBeGreaterThan(1e-3);
      g.dispose();
      p.dispose();
    } finally {
      model.dispose();
    }
  });

  it('refuses a model given as an adapter, and an adapter for another shape', async () => {
    const model = await loadModel(basePath, { device: 'cpu' });
    try {
      await expect(model.loadAdapter(basePath)).rejects.toThrow(/general.type: is null, not "adapter"/);
    } finally {
      model.dispose();
    }
    const other = join(dir, 'other.gguf');
    await writeGgufModel(other, makeTinyModel({ hidden: 48, heads: 4 }));
    const r = await runCli(['export', '--model', other, '--adapter', join(fixture, 'peft'), '--out', join(dir, 'x.gguf')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/has shape \[32, 4\].*needs \[48, 4\]/);
    expect((await runCli(['export', '--model', basePath, '--adapter', join(fixture, 'peft'), '--format', 'onnx', '--out', join(dir, 'y.gguf')])).stderr).toMatch(/--format must be gguf-lora/);
  });
});
