/**
 * PEFT adapters: the files we write (PEFT's keys, shapes and config), exact save → load round
 * trips, PEFT's variants (F16/BF16 weights, rsLoRA, regex target_modules, partial layers), and
 * clear errors for adapters the model cannot take.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { loadAdapter, saveAdapter } from '../../lib/adapters/peft.js';
import { bf16BitsOf, f16BitsOf, writeSafetensors } from '../../lib/formats/safetensors-writer.js';
import type { Adapter } from '../../lib/model/adapter.js';
import type { Model } from '../../lib/model/model.js';
import { randomiseB, tensorsOf, tinyTrainingModel } from '../train/tiny-training.js';

function header(bytes: Buffer): Record<string, { dtype: string; shape: number[] }> {
  return JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString());
}

function roundedBits(values: Float32Array, convert: (bits: number) => number): number[] {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  return Array.from(bits, convert);
}

describe('PEFT adapters', () => {
  let model: Model;
  let dir: string;
  beforeAll(async () => {
    // Untied, odd sizes: every projection has its own shape.
    ({ model } = await tinyTrainingModel({ seed: 4, hidden: 15, heads: 3, kvHeads: 1, headDim: 6, intermediate: 19, vocab: 37, tied: false, layers: 3 }));
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diffuse-peft-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  afterAll(() => model.dispose());

  async function trainedLooking(options: Parameters<Model['createAdapter']>[0]): Promise<Adapter> {
    const adapter = await model.createAdapter(options);
    await randomiseB(adapter, 3);
    return adapter;
  }

  it('writes PEFT’s keys, shapes and adapter_config.json', async () => {
    const adapter = await trainedLooking({ rank: 3, alpha: 6, targetModules: ['v_proj', 'q_proj', 'down_proj'] });
    await saveAdapter(adapter, join(dir, 'out'), { baseModel: 'HuggingFaceTB/SmolLM2-135M-Instruct' });
    const config = JSON.parse(await readFile(join(dir, 'out', 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: 3,
      lora_alpha: 6,
      lora_dropout: 0,
      target_modules: ['q_proj', 'v_proj', 'down_proj'],
      bias: 'none',
      fan_in_fan_out: false,
      base_model_name_or_path: 'HuggingFaceTB/SmolLM2-135M-Instruct',
      use_rslora: false,
      use_dora: false,
    });
    const h = header(await readFile(join(dir, 'out', 'adapter_model.safetensors')));
    const expected: Record<string, { dtype: string; shape: number[] }> = {};
    for (let layer = 0; layer < 3; layer++) {
      const p = `base_model.model.model.layers.${layer}`;
      expected[`${p}.self_attn.q_proj.lora_A.weight`] = { dtype: 'F32', shape: [3, 15] };
      expected[`${p}.self_attn.q_proj.lora_B.weight`] = { dtype: 'F32', shape: [18, 3] };
      expected[`${p}.self_attn.v_proj.lora_A.weight`] = { dtype: 'F32', shape: [3, 15] };
      expected[`${p}.self_attn.v_proj.lora_B.weight`] = { dtype: 'F32', shape: [6, 3] };
      expected[`${p}.mlp.down_proj.lora_A.weight`] = { dtype: 'F32', shape: [3, 19] };
      expected[`${p}.mlp.down_proj.lora_B.weight`] = { dtype: 'F32', shape: [15, 3] };
    }
    const { __metadata__, ...tensors } = h;
    expect(__metadata__).toEqual({ format: 'pt' });
    expect(Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, { dtype: v.dtype, shape: v.shape }]))).toEqual(expected);
    adapter.dispose();
  });

  it('loads what it saved exactly, and F16 / BF16 copies as their rounded values', async () => {
    const adapter = await trainedLooking({ rank: 2, alpha: 3.5, seed: 5 });
    const original = await tensorsOf(adapter);
    await saveAdapter(adapter, join(dir, 'f32'));
    const back = await loadAdapter(model, join(dir, 'f32'));
    expect([back.rank, back.alpha, back.targetModules]).toEqual([2, 3.5, adapter.targetModules]);
    const loaded = await tensorsOf(back);
    for (const [name, values] of original) expect(Array.from(loaded.get(name)!)).toEqual(Array.from(values));
    back.dispose();

    for (const [dtype, convert, widen] of [
      ['BF16', bf16BitsOf, (h: number) => h << 16],
      ['F16', f16BitsOf, undefined],
    ] as const) {
      await saveAdapter(adapter, join(dir, dtype), { dtype });
      const narrow = await loadAdapter(model, join(dir, dtype));
      const got = await tensorsOf(narrow);
      for (const [name, values] of original) {
        const roundedBack = roundedBits(got.get(name)!, convert);
        // Widening then rounding again is the identity on representable values.
        expect(roundedBack).toEqual(roundedBits(values, convert));
        if (widen) expect(Array.from(new Uint32Array(got.get(name)!.buffer))).toEqual(roundedBits(values, convert).map((h) => widen(h) >>> 0));
      }
      narrow.dispose();
    }
    adapter.dispose();
  });

  it('takes PEFT’s variants: rsLoRA, a regex for target_modules, layers left out', async () => {
    const out = join(dir, 'variant');
    await mkdir(out);
    const r = 2;
    const A = Float32Array.from({ length: r * 15 }, (_, i) => Math.sin(i) / 4);
    const B = Float32Array.from({ length: 6 * r }, (_, i) => Math.cos(i) / 4);
    await writeSafetensors(
      join(out, 'adapter_model.safetensors'),
      [
        { name: 'base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight', shape: [6, r], data: B, dtype: 'BF16' },
        { name: 'base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight', shape: [r, 15], data: A, dtype: 'BF16' },
      ],
      { metadata: { format: 'pt' } },
    );
    await writeFile(
      join(out, 'adapter_config.json'),
      JSON.stringify({ peft_type: 'LORA', r, lora_alpha: 4, use_rslora: true, lora_dropout: 0.1, target_modules: '.*\\.1\\.self_attn\\.k_proj', layers_to_transform: [1], peft_version: '0.99.0', some_future_key: {} }),
    );
    const warnings: string[] = [];
    const adapter = await loadAdapter(model, out, { warn: (m) => warnings.push(m) });
    expect(adapter.targetModules).toEqual(['k_proj']);
    // rsLoRA scales by α/√r: the engine's α/r with α' = α√r.
    expect(adapter.alpha / adapter.rank).toBeCloseTo(4 / Math.sqrt(2), 6);
    const t = await tensorsOf(adapter);
    expect(Array.from(t.get('layers.1.k_proj.lora_A')!)).toEqual(roundedBits(A, bf16BitsOf).map((h) => new Float32Array(Uint32Array.of(h << 16).buffer)[0]));
    for (const layer of [0, 2]) {
      expect(t.get(`layers.${layer}.k_proj.lora_A`)!.every((x) => x === 0)).toBe(true);
      expect(t.get(`layers.${layer}.k_proj.lora_B`)!.every((x) => x === 0)).toBe(true);
    }
    expect(warnings.join('\n')).toMatch(/lora_dropout 0\.1 is ignored/);
    expect(warnings.join('\n')).toMatch(/leaves layers 0, 2 unadapted/);
    adapter.dispose();
  });

  it('says clearly why an adapter cannot be loaded', async () => {
    const adapter = await trainedLooking({ rank: 2, alpha: 4, targetModules: ['q_proj', 'up_proj'] });
    const good = join(dir, 'good');
    await saveAdapter(adapter, good);
    const config = JSON.parse(await readFile(join(good, 'adapter_config.json'), 'utf8'));
    const variant = async (name: string, change: Record<string, unknown>, tensors?: Parameters<typeof writeSafetensors>[1]) => {
      const out = join(dir, name);
      await mkdir(out);
      await writeFile(join(out, 'adapter_config.json'), JSON.stringify({ ...config, ...change }));
      if (tensors) await writeSafetensors(join(out, 'adapter_model.safetensors'), tensors);
      else await writeFile(join(out, 'adapter_model.safetensors'), await readFile(join(good, 'adapter_model.safetensors')));
      return out;
    };
    await expect(loadAdapter(model, join(dir, 'nothing'))).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringMatching(/adapter_config\.json not found/) });
    await expect(loadAdapter(model, await variant('dora', { use_dora: true }))).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/use_dora/) });
    await expect(loadAdapter(model, await variant('ia3', { peft_type: 'IA3' }))).rejects.toThrow(/peft_type is "IA3"/);
    await expect(loadAdapter(model, await variant('head', { target_modules: ['q_proj', 'lm_head'] }))).rejects.toThrow(/target_modules lists "lm_head"/);
    await expect(loadAdapter(model, await variant('rank', { r: 3 }))).rejects.toThrow(/has shape \[2, 15\], but r = 3 .* needs \[3, 15\]/);
    await expect(loadAdapter(model, await variant('unlisted', { target_modules: ['q_proj'] }))).rejects.toThrow(/does not list up_proj/);
    const q = (layer: number, m: 'A' | 'B') => `base_model.model.model.layers.${layer}.self_attn.q_proj.lora_${m}.weight`;
    await expect(loadAdapter(model, await variant('alone', {}, [{ name: q(0, 'A'), shape: [2, 15], data: new Float32Array(30) }]))).rejects.toThrow(/has no lora_B partner/);
    await expect(loadAdapter(model, await variant('deep', {}, [{ name: q(7, 'A'), shape: [2, 15], data: new Float32Array(30) }]))).rejects.toThrow(/is for layer 7, but tiny has 3 layers/);
    await expect(
      loadAdapter(model, await variant('embed', {}, [{ name: 'base_model.model.model.embed_tokens.lora_embedding_A', shape: [2, 37], data: new Float32Array(74) }])),
    ).rejects.toThrow(/is not a LoRA matrix of a projection diffuse knows/);
    adapter.dispose();
  });
});
