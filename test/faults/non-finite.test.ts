/**
 * Fault injection: NaN and Inf planted in real files and in a live run. Model weights are
 * refused as they are read (naming the file, the tensor and the element), adapters and
 * checkpoints likewise, and a step whose loss or gradient is not finite is refused (DIVERGED)
 * with the adapter not updated and the last good checkpoint still `latest`.
 */
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { mergeAdapter } from '../../lib/adapters/merge.js';
import { saveAdapter } from '../../lib/adapters/peft.js';
import { readGguf } from '../../lib/formats/gguf.js';
import { readSafetensors } from '../../lib/formats/safetensors.js';
import { createNativeModel, loadModel } from '../../lib/model/load.js';
import { loadModelSpec } from '../../lib/model/tensors.js';
import type { Model } from '../../lib/model/model.js';
import { readCheckpoint } from '../../lib/train/checkpoint.js';
import { train } from '../../lib/train/train.js';
import { runCli } from '../cli/run.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';
import { makeTinyModel } from '../helpers/tiny-model.js';
import { writeHfDirectory } from '../helpers/write-safetensors.js';
import { samplePrompts, tensorsOf, tinyTrainingModel } from '../train/tiny-training.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-nonfinite-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Overwrites `bytes` at `offset` of the file, as a bad disk or a bad converter would. */
async function plant(path: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(path, 'r+');
  await handle.write(bytes, 0, bytes.length, offset);
  await handle.close();
}
const f32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return b;
};

describe('non-finite model weights', () => {
  it('refuses a GGUF with one NaN in a norm weight, naming the file, the tensor and the element', async () => {
    const path = await writeTinyChatModel(3);
    const norm = (await readGguf(path)).tensors.find((t) => t.name === 'blk.1.attn_norm.weight')!;
    await plant(path, norm.offset + 4 * 5, f32(NaN));
    const error = await loadModel(path, { device: 'cpu' }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'FORMAT' });
    expect((error as Error).message).toContain(path);
    expect((error as Error).message).toContain("tensor 'model.layers.1.input_layernorm.weight' holds a non-finite value (NaN or Inf) at [5]");
    expect((error as Error).message).toMatch(/re-download or re-convert/);
  });

  it('refuses an Inf in the f16 scale of a Q8_0 block, naming the element', async () => {
    const path = await writeTinyChatModel(4, { type: 'Q8_0' });
    const up = (await readGguf(path)).tensors.find((t) => t.name === 'blk.0.ffn_up.weight')!;
    expect(up.type).toBe('Q8_0');
    // Block 3 (values 96…127: row 3 of the [48, 32] up projection); its scale d is the block's first two bytes.
    await plant(path, up.offset + 3 * 34, Buffer.from([0x00, 0x7c]));
    await expect(loadModel(path, { device: 'cpu' })).rejects.toThrow(/tensor 'model\.layers\.0\.mlp\.up_proj\.weight' holds a non-finite value \(NaN or Inf\) at \[3, \d+\]/);
  });

  it('refuses an F16 Inf in a Hugging Face safetensors shard', async () => {
    const hf = join(dir, 'hf-inf');
    await writeHfDirectory(hf, makeTinyModel({ seed: 5 }), { dtype: 'F16' });
    const file = join(hf, 'model.safetensors');
    const k = (await readSafetensors(file)).tensors.get('model.layers.0.self_attn.k_proj.weight')!;
    await plant(file, k.offset + 2 * (32 + 7), Buffer.from([0x00, 0xfc])); // −Inf at [1, 7]
    // The weights' own path (a Hugging Face directory without a tokenizer is refused before them).
    const spec = await loadModelSpec(hf);
    await expect(createNativeModel(spec.config, spec.tensors, { device: 'cpu' })).rejects.toThrow(/model\.safetensors: tensor 'model\.layers\.0\.self_attn\.k_proj\.weight' holds a non-finite value \(NaN or Inf\) at \[1, 7\]/);
  });

  it('refuses to merge an adapter into a base with a NaN, naming the base file and the tensor, leaving no weights file', async () => {
    const clean = await writeTinyChatModel(7);
    const model = await loadModel(clean, { device: 'cpu' });
    const adapter = await model.createAdapter({ rank: 2, alpha: 4 });
    await saveAdapter(adapter, join(dir, 'merge-adapter'));
    adapter.dispose();
    model.dispose();
    const up = (await readGguf(clean)).tensors.find((t) => t.name === 'blk.0.ffn_down.weight')!;
    await plant(clean, up.offset + 4 * 40, f32(NaN));
    const out = join(dir, 'merged');
    await expect(mergeAdapter(clean, join(dir, 'merge-adapter'), out)).rejects.toThrow(`${clean}: tensor 'model.layers.0.mlp.down_proj.weight': holds a non-finite value (NaN) at element 40`);
    await expect(readFile(join(out, 'model.safetensors'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('makes diffuse logprobs exit 1 with the tensor named, instead of printing NaN log-probabilities', async () => {
    const path = await writeTinyChatModel(3);
    const norm = (await readGguf(path)).tensors.find((t) => t.name === 'output_norm.weight')!;
    await plant(path, norm.offset, f32(Infinity));
    const { code, stdout, stderr } = await runCli(['logprobs', '--model', path, '--request', 'Pick one', '--targets', '{1}', '{2}']);
    expect(code).toBe(1);
    expect(stdout).not.toMatch(/NaN/);
    expect(stderr).toContain("tensor 'model.norm.weight' holds a non-finite value");
  });
});

describe('non-finite adapters and checkpoints', () => {
  let model: Model;
  beforeAll(async () => {
    ({ model } = await tinyTrainingModel({ seed: 6 }));
  });
  afterAll(() => model.dispose());

  it('refuses an adapter with a NaN in one matrix, naming the file and the tensor, and leaves the file as it was', async () => {
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, seed: 1 });
    const out = join(dir, 'nan-adapter');
    await saveAdapter(adapter, out);
    adapter.dispose();
    const file = join(out, 'adapter_model.safetensors');
    const key = 'base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight';
    const t = (await readSafetensors(file)).tensors.get(key)!;
    await plant(file, t.offset + 4 * 3, f32(NaN));
    const before = await readFile(file);
    await expect(model.loadAdapter(out)).rejects.toMatchObject({
      code: 'FORMAT',
      message: expect.stringContaining(`${file}: tensor '${key}': holds a non-finite value (NaN) at element 3`),
    });
    expect((await readFile(file)).equals(before)).toBe(true);
  });

  it('refuses to report log-probabilities that overflow under an adapter of huge (finite) values', async () => {
    const chat = await loadModel(await writeTinyChatModel(13), { device: 'cpu' });
    const adapter = await chat.createAdapter({ rank: 2, alpha: 4 });
    for (const t of adapter.tensors()) await adapter.setTensor(t.name, new Float32Array(t.shape[0] * t.shape[1]).fill(1e30));
    await expect(chat.targetLogProbs({ request: 'Pick one', targets: ['{1}', '{2}'] }, { adapter })).rejects.toMatchObject({
      code: 'DIVERGED',
      message: expect.stringContaining('the model with this adapter gives non-finite log-probabilities for prompt 0 ("Pick one")'),
    });
    expect((await chat.targetLogProbs({ request: 'Pick one', targets: ['{1}', '{2}'] })).targets.every((t) => Number.isFinite(t.logprob))).toBe(true);
    adapter.dispose();
    chat.dispose();
  });

  it('DIVERGED: refuses the step whose loss is not finite, leaves the adapter un-updated and the last good checkpoint latest', async () => {
    const prompts = samplePrompts(model.config.vocabSize);
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, seed: 2 });
    const checkpoints = join(dir, 'diverged-checkpoints');
    const log = join(dir, 'diverged.jsonl');
    const poisoned = new Map<string, Float32Array>();
    const error = await train(model, adapter, prompts, {
      nIters: 3,
      lr: 1e-2,
      checkpointDir: checkpoints,
      checkpointEvery: 1,
      logFile: log,
      onStep: async (r) => {
        if (r.step !== 2) return;
        // After step 2 (checkpointed), an overflowing update: lora_B of every layer at 1e30.
        for (const t of adapter.tensors())
          if (t.name.endsWith('lora_B')) {
            const huge = new Float32Array(t.shape[0] * t.shape[1]).fill(1e30);
            await adapter.setTensor(t.name, huge);
            poisoned.set(t.name, huge);
          }
      },
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'DIVERGED', message: expect.stringMatching(/training diverged at step 3 .*the adapter was not updated\. Lower the learning rate and resume from .*step-00000002/) });
    // Not updated: the parameters are the ones the failed step started from, bit for bit.
    const now = await tensorsOf(adapter);
    for (const [name, values] of poisoned) expect(Buffer.from(now.get(name)!.buffer).equals(Buffer.from(values.buffer))).toBe(true);
    // The last good checkpoint is step 2's, whole, and its weights are finite.
    const latest = await readCheckpoint(checkpoints);
    expect(latest!.trainer.state.step).toBe(2);
    const reloaded = await model.loadAdapter(latest!.dir);
    for (const values of (await tensorsOf(reloaded)).values()) expect(values.every(Number.isFinite)).toBe(true);
    reloaded.dispose();
    // The log holds the two good steps and nothing of the third.
    const lines = (await readFile(log, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.step)).toEqual([1, 2]);
    adapter.dispose();
  });
});
