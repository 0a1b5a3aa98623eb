/**
 * Merging an adapter into its base: W' = W + (α/r)·B·A against a float64 reference, every other
 * tensor untouched, GGUF bases un-quantised and un-permuted into Hugging Face's layout, and the
 * merged directory loading back — weights, config and tokenizer — with the same outputs as the
 * base model with the adapter applied.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { mergeAdapter, unpermuteRows } from '../../lib/adapters/merge.js';
import { saveAdapter } from '../../lib/adapters/peft.js';
import { readTensorsF32 } from '../../lib/adapters/tensor-file.js';
import { readGguf } from '../../lib/formats/gguf.js';
import { readHfDirectory } from '../../lib/formats/hf-directory.js';
import { readSafetensors } from '../../lib/formats/safetensors.js';
import { bf16BitsOf } from '../../lib/formats/safetensors-writer.js';
import type { Adapter } from '../../lib/model/adapter.js';
import { engineConfigFromHf } from '../../lib/model/config.js';
import { Model } from '../../lib/model/model.js';
import { loadModelSpec } from '../../lib/model/tensors.js';
import { native, type NativeBatch } from '../../lib/native.js';
import { tokenizerFromGguf, tokenizerFromHfDirectory } from '../../lib/tokenizer/index.js';
import { makeTinyModel, tinyBatch, tinyModelSources, type TinyModel } from '../helpers/tiny-model.js';
import { writeGgufModel } from '../helpers/write-gguf.js';
import { writeHfDirectory } from '../helpers/write-safetensors.js';
import { randomiseB, relErr, tensorsOf } from '../train/tiny-training.js';

const chars = [...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456'];
const vocab = [...chars, '<|im_start|>', '<|im_end|>'];
const ggufTokenizer = {
  'tokenizer.ggml.model': 'gpt2',
  'tokenizer.ggml.pre': 'default',
  'tokenizer.ggml.tokens': vocab,
  'tokenizer.ggml.token_type': vocab.map((t) => (t.startsWith('<|') ? 3 : 1)),
  'tokenizer.ggml.merges': { type: 'array' as const, itemType: 'string' as const, values: [] },
  'tokenizer.ggml.bos_token_id': 59,
  'tokenizer.ggml.eos_token_id': 60,
  'tokenizer.chat_template': "{% for m in messages %}<|im_start|>{{ m['role'] }}{{ m['content'] }}<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{% endif %}",
};

async function engineFor(path: string) {
  const spec = await loadModelSpec(path);
  return native().createModel({ config: spec.config, tensors: spec.tensors, device: 'cpu' });
}

async function logProbs(path: string, batch: NativeBatch, adapter?: Adapter): Promise<Float32Array> {
  const engine = await engineFor(path);
  try {
    return (await engine.forward(batch, adapter?.native)).edgeLogProbs;
  } finally {
    engine.dispose();
  }
}

/** The adapter's update in float64: W + (α/r)·B·A for `module` of `layer`. */
function referenceMerge(W: ArrayLike<number>, shape: number[], A: Float32Array, B: Float32Array, scale: number): Float64Array {
  const [out, inF] = shape;
  const r = A.length / inF;
  const merged = Float64Array.from(W);
  for (let o = 0; o < out; o++)
    for (let j = 0; j < inF; j++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += B[o * r + k] * A[k * inF + j];
      merged[o * inF + j] += scale * s;
    }
  return merged;
}

describe('merging an adapter into its base model', () => {
  let dir: string;
  let tiny: TinyModel;
  let model: Model;
  let adapter: Adapter;
  let batch: NativeBatch;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diffuse-merge-'));
    tiny = makeTinyModel({ seed: 12, vocab: vocab.length, kvHeads: 1, layers: 2 });
    const engine = await native().createModel({ config: tiny.config, tensors: tinyModelSources(tiny), device: 'cpu' });
    model = new Model('tiny', tiny.config, engine, undefined);
    adapter = await model.createAdapter({ rank: 3, alpha: 7, targetModules: ['q_proj', 'k_proj', 'o_proj', 'up_proj'], seed: 4 });
    await randomiseB(adapter, 5, 0.8);
    await saveAdapter(adapter, join(dir, 'adapter'));
    batch = tinyBatch(tiny.config.vocabSize);
  });
  afterAll(async () => {
    adapter.dispose();
    model.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('merges into a Hugging Face base: updated projections, every other tensor and file as it was', async () => {
    const base = join(dir, 'hf-base');
    await writeHfDirectory(base, tiny, { shards: 2 });
    await writeFile(join(base, 'tokenizer.json'), '{"version": "1.0"}');
    await writeFile(join(base, 'tokenizer_config.json'), '{"chat_template": "x"}');
    const result = await mergeAdapter(base, join(dir, 'adapter'), join(dir, 'hf-merged'));
    expect(result).toMatchObject({ tensors: tiny.weights.size, merged: 8 });
    expect(result.files.sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) expect(await readFile(join(dir, 'hf-merged', f), 'utf8')).toBe(await readFile(join(base, f), 'utf8'));
    const baseConfig = JSON.parse(await readFile(join(base, 'config.json'), 'utf8'));
    expect(JSON.parse(await readFile(join(dir, 'hf-merged', 'config.json'), 'utf8'))).toEqual(baseConfig);

    const file = await readSafetensors(join(dir, 'hf-merged', 'model.safetensors'));
    const merged = await readTensorsF32(file, [...tiny.weights.keys()]);
    const loraTensors = await tensorsOf(adapter);
    const scale = 7 / 3;
    for (const [name, w] of tiny.weights) {
      expect(file.tensors.get(name)).toMatchObject({ dtype: 'F32', shape: w.shape });
      const m = /^model\.layers\.(\d+)\.\w+\.(\w+)\.weight$/.exec(name);
      const key = m && `layers.${m[1]}.${m[2]}`;
      if (key && loraTensors.has(`${key}.lora_A`)) {
        const ref = referenceMerge(w.data, w.shape, loraTensors.get(`${key}.lora_A`)!, loraTensors.get(`${key}.lora_B`)!, scale);
        expect(relErr(merged.get(name)!, ref)).toBeLessThan(1e-6);
        expect(relErr(w.data, ref)).toBeGreaterThan(1e-3);
      } else expect(Array.from(merged.get(name)!)).toEqual(Array.from(w.data));
    }

    const withAdapter = (await model.live().forward(batch, adapter.native)).edgeLogProbs;
    expect(relErr(await logProbs(join(dir, 'hf-merged'), batch), withAdapter)).toBeLessThan(1e-5);
  });

  it('merges into a quantised GGUF base, un-permuting Q and K, with a config and tokenizer transformers reads', async () => {
    const gguf = join(dir, 'base.gguf');
    await writeGgufModel(gguf, tiny, { type: 'Q8_0', tokenizer: ggufTokenizer });
    const ggufModel = await engineFor(gguf);
    const ggufAdapter = await new Model('gguf', tiny.config, ggufModel, undefined).createAdapter({ rank: 3, alpha: 7, targetModules: ['q_proj', 'k_proj', 'o_proj', 'up_proj'] });
    for (const [name, values] of await tensorsOf(adapter)) await ggufAdapter.setTensor(name, values);
    const withAdapter = (await ggufModel.forward(batch, ggufAdapter.native)).edgeLogProbs;

    await mergeAdapter(gguf, join(dir, 'adapter'), join(dir, 'gguf-merged'));
    expect(relErr(await logProbs(join(dir, 'gguf-merged'), batch), withAdapter)).toBeLessThan(1e-5);

    const hf = await readHfDirectory(join(dir, 'gguf-merged'));
    expect(hf.config).toMatchObject({ architectures: ['LlamaForCausalLM'], model_type: 'llama', bos_token_id: 59, eos_token_id: 60, torch_dtype: 'float32' });
    expect(engineConfigFromHf(hf.config, hf.configPath)).toEqual(tiny.config);
    const fromGguf = tokenizerFromGguf(await readGguf(gguf));
    const fromMerged = await tokenizerFromHfDirectory(join(dir, 'gguf-merged'));
    const chat = [{ role: 'user' as const, content: 'Pick aNumber 0123' }];
    expect(fromMerged.encodeChat(chat, { addGenerationPrompt: true })).toEqual(fromGguf.encodeChat(chat, { addGenerationPrompt: true }));
    expect(fromMerged.encode('abc XYZ')).toEqual(fromGguf.encode('abc XYZ'));

    // BF16: the same merged values, each rounded to nearest even.
    await mergeAdapter(gguf, join(dir, 'adapter'), join(dir, 'gguf-bf16'), { dtype: 'BF16' });
    const f32 = await readSafetensors(join(dir, 'gguf-merged', 'model.safetensors'));
    const bf16 = await readSafetensors(join(dir, 'gguf-bf16', 'model.safetensors'));
    const names = [...f32.tensors.keys()];
    const a = await readTensorsF32(f32, names);
    const b = await readTensorsF32(bf16, names);
    for (const name of names) {
      expect(bf16.tensors.get(name)!.dtype).toBe('BF16');
      const wide = a.get(name)!;
      const expected = Array.from(new Uint32Array(wide.buffer, wide.byteOffset, wide.length), (bits) => (bf16BitsOf(bits) << 16) >>> 0);
      expect(Array.from(new Uint32Array(b.get(name)!.buffer))).toEqual(expected);
    }
    expect(JSON.parse(await readFile(join(dir, 'gguf-bf16', 'config.json'), 'utf8')).torch_dtype).toBe('bfloat16');
    ggufAdapter.dispose();
    ggufModel.dispose();
  });

  it('undoes GGUF’s Q/K row interleaving', () => {
    // Two heads of width 4, one column: HF rows [h0: 0 1 | 2 3, h1: 4 5 | 6 7] are stored interleaved.
    const gguf = Float32Array.of(0, 2, 1, 3, 4, 6, 5, 7);
    expect(Array.from(unpermuteRows(gguf, 2, 1))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('refuses to write over its base or to merge an adapter of another model', async () => {
    const base = join(dir, 'hf-other');
    await writeHfDirectory(base, makeTinyModel({ seed: 1, vocab: vocab.length, hidden: 16, heads: 2, kvHeads: 1 }));
    await expect(mergeAdapter(base, join(dir, 'adapter'), base)).rejects.toThrow(/cannot be written over its base/);
    await expect(mergeAdapter(base, join(dir, 'adapter'), join(dir, 'x'))).rejects.toThrow(/has shape \[3, 32\], but r = 3 .* needs \[3, 16\]/);
  });
});
