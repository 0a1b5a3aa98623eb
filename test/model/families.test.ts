/**
 * Every supported family against transformers itself: tools/reference/family_fixtures.py made
 * a tiny random model of each (every weight random, norms too; windows shorter than the
 * sequences), saved it as a Hugging Face directory and through llama.cpp's converter as GGUF,
 * and recorded transformers' target log-probs. Ours, from both files, agree within 1e-4 nats
 * per target — through the trie (one pass over prompt + targets), not one sequence at a time.
 * The same for a reference task through the directory's tokenizer and chat template (the
 * family's, rendered by @huggingface/jinja), token for token; and `diffuse train` runs the
 * paper's configs for Gemma-7B-it, Mistral-7B-Instruct and Llama-2-13B-chat on them.
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { mergeAdapter } from '../../lib/adapters/merge.js';
import { readGguf, type GgufFile } from '../../lib/formats/gguf.js';
import { readSafetensors } from '../../lib/formats/safetensors.js';
import { loadModel } from '../../lib/model/load.js';
import { Progress } from '../../lib/progress.js';
import { runCli } from '../cli/run.js';
import { copyGgufWith, gguf } from '../helpers/write-gguf.js';

import { loadModelSpec } from '../../lib/model/tensors.js';
import { native, type NativeModel } from '../../lib/native.js';
import { buildTrieBatch, sequenceLogProbs, type PreparedPrompt } from '../../lib/targets/target-set.js';

interface Fixture {
  family: string;
  prompt_token_ids: number[];
  targets: { token_ids: number[]; token_logprobs: number[]; logprob: number }[];
  chat: {
    file: string;
    prompt_token_ids: number[];
    targets: { target: string; token_ids: number[]; logprob: number }[];
    lora_logprobs: number[];
    /** The same through apply_chat_template(..., **kwargs) (qwen3: enable_thinking=False). */
    with_kwargs?: { kwargs: Record<string, unknown>; prompt_token_ids: number[]; targets: { target: string; token_ids: number[]; logprob: number }[] };
  };
  gguf: string | null;
  /** The same model in bfloat16, sharded, with transformers' log-probs of those weights. */
  bf16_sharded?: { dir: string; logprobs: number[] };
}

const dir = new URL('../fixtures/families/', import.meta.url).pathname;
const families = ['llama', 'mistral', 'qwen3', 'gemma', 'gemma2', 'gemma3_text', 'phi3', 'phi3_longrope', 'phi4_partial'];
const prompts = new URL('../../data/tasks/reference/prompts/', import.meta.url).pathname;
const configs = new URL('../../data/tasks/reference/configs/all/', import.meta.url).pathname;

function prompt(f: Fixture): PreparedPrompt {
  const n = f.targets.length;
  return {
    request: f.family,
    responses: [''],
    targets: f.targets.map((_, i) => `t${i}`),
    weights: f.targets.map(() => 1 / n),
    promptTokens: f.prompt_token_ids,
    sequences: f.targets.map((t, i) => ({ target: i, response: 0, tokens: t.token_ids, weight: 1 / n })),
  };
}

async function worstDifference(path: string, f: Fixture, reference = f.targets.map((t) => t.logprob)): Promise<{ worst: number; config: Record<string, unknown> }> {
  const spec = await loadModelSpec(path);
  const model: NativeModel = await native().createModel({ config: spec.config, tensors: spec.tensors, device: 'cpu', threads: 1 });
  try {
    // Laid out as Model.trieBatch does: a LongRoPE model's prompt split where its sequences straddle the original context.
    const s = spec.config.ropeScaling;
    const trie = buildTrieBatch([prompt(f)], s?.type === 'longrope' ? { ropeSplit: s.originalMaxPositionEmbeddings } : {});
    const ours = sequenceLogProbs(trie, (await model.forward(trie.batch)).edgeLogProbs)[0];
    const worst = Math.max(...reference.map((lp, i) => Math.abs(ours[i] - lp)));
    return { worst, config: spec.config as unknown as Record<string, unknown> };
  } finally {
    model.dispose();
  }
}

describe.each(families)('the %s family against transformers', (family) => {
  let fixture: Fixture;
  beforeAll(async () => {
    fixture = JSON.parse(await readFile(`${dir}${family}.json`, 'utf8'));
  });

  it('gives every target transformers\' log-prob within 1e-4 nats from the Hugging Face directory', async () => {
    const { worst } = await worstDifference(`${dir}${family}`, fixture);
    expect({ family, format: 'hf', worst }).toEqual({ family, format: 'hf', worst: expect.any(Number) });
    expect(worst).toBeLessThanOrEqual(1e-4);
  });

  if (family !== 'mistral')
    it("gives the same from llama.cpp's GGUF conversion", async () => {
      const { worst } = await worstDifference(`${dir}${fixture.gguf}`, fixture);
      expect({ family, format: 'gguf', worst }).toEqual({ family, format: 'gguf', worst: expect.any(Number) });
      expect(worst).toBeLessThanOrEqual(1e-4);
    });

  if (family === 'gemma2' || family === 'qwen3')
    it('gives the same from a bfloat16 copy sharded over several safetensors files', async () => {
      const { worst } = await worstDifference(`${dir}${fixture.bf16_sharded!.dir}`, fixture, fixture.bf16_sharded!.logprobs);
      expect(worst).toBeLessThanOrEqual(1e-4);
    });

  it("tokenizes a reference task through the family's chat template as transformers does, with the same target log-probs, also under PEFT's adapter", async () => {
    const model = await loadModel(`${dir}${family}`, { device: 'cpu', threads: 1, progress: new Progress({ mode: 'silent' }) });
    try {
      const request = JSON.parse(await readFile(`${prompts}${fixture.chat.file}`, 'utf8'));
      const [prepared] = model.prepare([request]);
      expect(prepared.promptTokens).toEqual(fixture.chat.prompt_token_ids);
      const ours = new Map((await model.targetLogProbs(request)).targets.map((t) => [t.target, t]));
      let worst = 0;
      for (const ref of fixture.chat.targets) {
        const t = ours.get(ref.target)!;
        expect(t.tokens).toEqual(ref.token_ids);
        worst = Math.max(worst, Math.abs(t.logprob - ref.logprob));
      }
      expect(worst).toBeLessThanOrEqual(1e-4);

      // PEFT's own adapter for the family (every linear layer under PEFT's module names; Phi-3's
      // fused qkv_proj and gate_up_proj) loads here.
      const adapter = await model.loadAdapter(`${dir}${family}-lora`);
      if (family === 'phi3') expect(adapter.targetModules).toEqual(['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj']);
      const tuned = new Map((await model.targetLogProbs(request, { adapter })).targets.map((t) => [t.target, t.logprob]));
      const lora = fixture.chat.lora_logprobs;
      const worstTuned = Math.max(...fixture.chat.targets.map((ref, i) => Math.abs(tuned.get(ref.target)! - lora[i])));
      expect(worstTuned).toBeLessThanOrEqual(1e-4);
      expect(Math.max(...fixture.chat.targets.map((ref, i) => Math.abs(ref.logprob - lora[i])))).toBeGreaterThan(1e-2);
      adapter.dispose();
    } finally {
      model.dispose();
    }
  });
});

// Qwen3's shipped template: by default the assistant turn opens with an empty thinking block
// ("<think>\n\n</think>\n\n", part of every target); with enable_thinking=false the
// generation prompt carries it instead and targets are the answer alone.
describe("Qwen3's shipped chat template, with transformers' defaults and enable_thinking=false", () => {
  let fixture: Fixture;
  let request: { request: string; targets: string[]; response?: string[] };
  beforeAll(async () => {
    fixture = JSON.parse(await readFile(`${dir}qwen3.json`, 'utf8'));
    request = JSON.parse(await readFile(`${prompts}${fixture.chat.file}`, 'utf8'));
  });

  it('renders the thinking block as transformers does, and enable_thinking=false (a load option or per call) moves it into the prompt', async () => {
    const think = fixture.chat.targets[0].token_ids.slice(0, 6);
    const noThinking = fixture.chat.with_kwargs!;
    expect(noThinking.kwargs).toEqual({ enable_thinking: false });
    expect(noThinking.prompt_token_ids).toEqual([...fixture.chat.prompt_token_ids, ...think]);
    const model = await loadModel(`${dir}qwen3`, { device: 'cpu', threads: 1, progress: new Progress({ mode: 'silent' }), chatTemplateKwargs: { enable_thinking: false } });
    try {
      expect(model.tokenizer!.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true })).toBe('<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n');
      const [prepared] = model.prepare([request]);
      expect(prepared.promptTokens).toEqual(noThinking.prompt_token_ids);
      const ours = new Map((await model.targetLogProbs(request)).targets.map((t) => [t.target, t]));
      let worst = 0;
      for (const ref of noThinking.targets) {
        expect(ours.get(ref.target)!.tokens).toEqual(ref.token_ids);
        worst = Math.max(worst, Math.abs(ours.get(ref.target)!.logprob - ref.logprob));
      }
      expect(worst).toBeLessThanOrEqual(1e-4);
      // A call's own variables override the model's: the template's default again.
      const [thinking] = model.prepare([request], { chatTemplateKwargs: { enable_thinking: true } });
      expect(thinking.promptTokens).toEqual(fixture.chat.prompt_token_ids);
      expect(thinking.sequences[0].tokens.slice(0, 6)).toEqual(think);
      expect(() => model.tokenizer!.setChatTemplateKwargs({ messages: [] })).toThrow(/'messages' is set by diffuse itself/);
    } finally {
      model.dispose();
    }
  });

  it('takes --chat-template-arg enable_thinking=false on the command line, and refuses a value that is not JSON', async () => {
    const args = ['logprobs', '--model', `${dir}qwen3`, '--task', `${prompts}${fixture.chat.file}`, '--threads', '1', '--json'];
    const { code, stdout, stderr } = await runCli([...args, '--chat-template-arg', 'enable_thinking=false']);
    expect(stderr).not.toContain('internal error');
    expect(code).toBe(0);
    const got = new Map((JSON.parse(stdout).tasks[0].targets as { target: string; tokens: number[]; logprob: number }[]).map((t) => [t.target, t]));
    for (const ref of fixture.chat.with_kwargs!.targets) {
      expect(got.get(ref.target)!.tokens).toEqual(ref.token_ids);
      expect(Math.abs(got.get(ref.target)!.logprob - ref.logprob)).toBeLessThanOrEqual(1e-4);
    }
    const typo = await runCli([...args, '--chat-template-arg', 'enable_thinking=flase']);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toMatch(/--chat-template-arg enable_thinking: the value must be JSON .* not 'flase'/);
    const unnamed = await runCli([...args, '--chat-template-arg', 'false']);
    expect(unnamed.code).toBe(1);
    expect(unnamed.stderr).toMatch(/--chat-template-arg must be NAME=VALUE/);
  });

  it("trains with a config's chat_template_kwargs or the flag over it: the same targets, not the default's", async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'diffuse-qwen3-train-'));
    const yaml = (extra: string) => `model: ${dir}qwen3\ntrain_prompts: [${prompts}${fixture.chat.file}]\noutput_dir: ${tmp}/out\n${extra}`;
    const loss = async (config: string, flags: string[] = []) => {
      const path = join(tmp, `c${Math.random().toString(36).slice(2)}.yaml`);
      await writeFile(path, config);
      const r = await runCli(['train', path, '--out', join(tmp, `out-${Math.random().toString(36).slice(2)}`), '--iters', '1', '--threads', '1', '--json', ...flags]);
      expect(r.stderr).not.toContain('internal error');
      expect(r.code).toBe(0);
      return (JSON.parse(r.stdout).records as { loss: number }[])[0].loss;
    };
    const thinking = await loss(yaml(''));
    const fromConfig = await loss(yaml('chat_template_kwargs: {enable_thinking: false}\n'));
    const fromFlag = await loss(yaml(''), ['--chat-template-arg', 'enable_thinking=false']);
    const flagOverConfig = await loss(yaml('chat_template_kwargs: {enable_thinking: true}\n'), ['--chat-template-arg', 'enable_thinking=false']);
    expect(fromFlag).toBe(fromConfig);
    expect(flagOverConfig).toBe(fromConfig);
    expect(Math.abs(thinking - fromConfig)).toBeGreaterThan(1e-3);
  });
});

// Merging PEFT's adapter (on the fused qkv_proj / gate_up_proj) into a fused Phi-3 checkpoint
// keeps the fused layout: the merged model has transformers+PEFT's log-probs, and ours.
describe.each([
  ['phi3', 'hf'],
  ['phi4_partial', 'hf'],
  ['phi4_partial', 'gguf'],
])('merging an adapter into the fused %s checkpoint (%s)', (family, format) => {
  it('writes qkv_proj and gate_up_proj back, and the merged model gives the base + adapter log-probs', async () => {
    const fixture: Fixture = JSON.parse(await readFile(`${dir}${family}.json`, 'utf8'));
    const request = JSON.parse(await readFile(`${prompts}${fixture.chat.file}`, 'utf8'));
    const tmp = await mkdtemp(join(tmpdir(), 'diffuse-fused-merge-'));
    const out = join(tmp, 'merged');
    let base = `${dir}${family}`;
    if (format === 'gguf') {
      // The fixture GGUF's tokenizer has no merges, and so no tokenizer.ggml.merges key (gguf-py
      // writes no empty arrays), which a GGUF tokenizer needs; the copy has an empty list.
      base = join(tmp, `${family}.gguf`);
      await copyGgufWith(`${dir}${fixture.gguf}`, base, { 'tokenizer.ggml.merges': gguf.array('string', []) });
    }
    const result = await mergeAdapter(base, `${dir}${family}-lora`, out);
    const layers = 3;
    expect(result.merged).toBe(4 * layers);
    const names = [...(await readSafetensors(join(out, 'model.safetensors'))).tensors.keys()];
    expect(names.filter((n) => /qkv_proj|gate_up_proj/.test(n))).toHaveLength(2 * layers);
    expect(names.filter((n) => /\.(q|k|v|gate|up)_proj\./.test(n))).toEqual([]);
    const progress = new Progress({ mode: 'silent' });
    const merged = await loadModel(out, { device: 'cpu', threads: 1, progress });
    const unmerged = await loadModel(`${dir}${family}`, { device: 'cpu', threads: 1, progress });
    try {
      const adapter = await unmerged.loadAdapter(`${dir}${family}-lora`);
      const ours = (await unmerged.targetLogProbs(request, { adapter })).targets.map((t) => t.logprob);
      adapter.dispose();
      const fromMerged = (await merged.targetLogProbs(request)).targets.map((t) => t.logprob);
      const worst = Math.max(...fromMerged.map((lp, i) => Math.abs(lp - ours[i])));
      expect(worst).toBeLessThanOrEqual(1e-4);
      const byTarget = new Map((await merged.targetLogProbs(request)).targets.map((t) => [t.target, t.logprob]));
      const worstPeft = Math.max(...fixture.chat.targets.map((ref, i) => Math.abs(byTarget.get(ref.target)! - fixture.chat.lora_logprobs[i])));
      expect(worstPeft).toBeLessThanOrEqual(1e-4);
    } finally {
      merged.dispose();
      unmerged.dispose();
    }
  });
});

// GGUF LoRA for the fused layers: llama.cpp's convert_lora_to_gguf.py made <family>-lora.gguf
// from PEFT's adapter; `diffuse export` writes the same file, and ours reads theirs.
describe.each(['phi3', 'phi4_partial'])("a GGUF LoRA of the fused %s layers, as llama.cpp's converter writes it", (family) => {
  it('is what diffuse export writes, and runs as PEFT runs the adapter', async () => {
    const fixture: Fixture = JSON.parse(await readFile(`${dir}${family}.json`, 'utf8'));
    const out = join(await mkdtemp(join(tmpdir(), 'diffuse-fused-lora-')), 'ours.gguf');
    const r = await runCli(['export', '--model', `${dir}${fixture.gguf}`, '--adapter', `${dir}${family}-lora`, '--format', 'gguf-lora', '--out', out, '--json']);
    expect(r.code).toBe(0);
    const [ours, theirs] = await Promise.all([readGguf(out), readGguf(`${dir}${family}-lora.gguf`)]);
    for (const key of ['general.architecture', 'general.type', 'adapter.type', 'adapter.lora.alpha']) expect(ours.metadata.get(key)).toEqual(theirs.metadata.get(key));
    const listing = (g: GgufFile) => g.tensors.map((t) => [t.name, t.dims, t.type]).sort((a, b) => String(a[0]).localeCompare(String(b[0])));
    expect(listing(ours)).toEqual(listing(theirs));
    expect(theirs.tensors.map((t) => t.name)).toContain('blk.0.attn_qkv.weight.lora_b');
    const bytes = async (g: GgufFile) => {
      const file = await readFile(g.path);
      return new Map(g.tensors.map((t) => [t.name, file.subarray(t.offset, t.offset + t.byteLength)]));
    };
    const [a, b] = await Promise.all([bytes(ours), bytes(theirs)]);
    for (const [name, v] of b) expect({ name, same: a.get(name)!.equals(v) }).toEqual({ name, same: true });

    const model = await loadModel(`${dir}${family}`, { device: 'cpu', threads: 1, progress: new Progress({ mode: 'silent' }) });
    try {
      const request = JSON.parse(await readFile(`${prompts}${fixture.chat.file}`, 'utf8'));
      const adapter = await model.loadAdapter(`${dir}${family}-lora.gguf`);
      expect(adapter.targetModules).toEqual(['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj']);
      const tuned = new Map((await model.targetLogProbs(request, { adapter })).targets.map((t) => [t.target, t.logprob]));
      adapter.dispose();
      expect(Math.max(...fixture.chat.targets.map((ref, i) => Math.abs(tuned.get(ref.target)! - fixture.chat.lora_logprobs[i])))).toBeLessThanOrEqual(1e-4);
    } finally {
      model.dispose();
    }
  });
});

describe("diffuse train runs the paper's configs end to end on tiny models of their families", () => {
  it.each([
    ['gemma-7b-it.yaml', 'gemma'],
    ['mistral-7B-instruct.yaml', 'mistral'],
    ['llama-2-13b-chat.yaml', 'llama'],
    // The seven default modules become Phi-3's fused four.
    ['llama-2-13b-chat.yaml', 'phi3'],
  ])('%s with --model a tiny %s directory', async (config, family) => {
    const out = join(await mkdtemp(join(tmpdir(), 'diffuse-families-')), family);
    const { code, stdout, stderr } = await runCli(['train', `${configs}${config}`, '--model', `${dir}${family}`, '--out', out, '--iters', '1', '--threads', '1', '--json']);
    expect(stderr).not.toContain('internal error');
    expect(code).toBe(0);
    const result = JSON.parse(stdout);
    expect(result).toMatchObject({ stopped: 'completed', passes: 1 });
    expect(result.steps).toBeGreaterThan(20);
    expect(result.records.every((r: { loss: number }) => Number.isFinite(r.loss))).toBe(true);
  });
});
