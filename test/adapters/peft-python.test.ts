/**
 * Our adapters in Hugging Face's own stack: PEFT loads an adapter we saved onto transformers'
 * SmolLM2-135M-Instruct (from the same GGUF, via gguf_file=) and reproduces our target
 * log-probabilities; transformers loads the merged directory (weights, config, tokenizer) and
 * reproduces them too; and an adapter PEFT itself wrote (bfloat16, rsLoRA) loads onto our
 * model with the log-probabilities PEFT gives. Runs tools/reference/peft_logprobs.py with
 * $DIFFUSE_PYTHON, else $DIFFUSE_HOME/pyenv/bin/python, only when DIFFUSE_LIVE_PYTHON=1 asks for
 * it (then a Python without torch, transformers, peft and gguf is a failure, not a skip).
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';

import { mergeAdapter } from '../../lib/adapters/merge.js';
import { loadAdapter, saveAdapter } from '../../lib/adapters/peft.js';
import { readSafetensors } from '../../lib/formats/safetensors.js';
import { ensureDefaultModel, diffuseHome } from '../../lib/model/default-model.js';
import { loadModel } from '../../lib/model/load.js';
import type { Model, TargetDistribution } from '../../lib/model/model.js';
import { packageRoot } from '../../lib/native.js';
import { Progress } from '../../lib/progress.js';
import { randomiseB } from '../train/tiny-training.js';

// Live Python runs only when asked for; the committed fixture (peft-fixture.test.ts) always runs.
const live = process.env.DIFFUSE_LIVE_PYTHON === '1';
const python = process.env.DIFFUSE_PYTHON ?? join(diffuseHome(), 'pyenv', 'bin', 'python');
const describeLive = live ? describe : describe.skip;

interface Reference {
  base_logprobs: number[];
  logprobs?: number[];
  chat_ids?: number[];
  peft_adapter_logprobs?: number[];
}

function reference(requests: object[]): Reference[] {
  const out = execFileSync(python, [join(packageRoot, 'tools', 'reference', 'peft_logprobs.py')], {
    input: JSON.stringify(requests),
    maxBuffer: 1 << 24,
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  return JSON.parse(out.toString()) as Reference[];
}

const request = { request: 'Pick a random number between 1 and 10. Answer with the number only.', targets: ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10'] };

describeLive(`PEFT and transformers on our adapters, live in ${python}${live ? '' : ' (skipped: set DIFFUSE_LIVE_PYTHON=1 to run it; peft-fixture.test.ts is the committed check)'}`, () => {
  let dir: string;
  let gguf: string;
  let model: Model;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diffuse-peft-py-'));
    gguf = await ensureDefaultModel({ progress: new Progress({ mode: 'silent' }) });
    model = await loadModel(gguf);
  });
  afterAll(async () => {
    model?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('PEFT reproduces our adapter, transformers our merged model, and we reproduce PEFT’s own adapter', async () => {
    const adapter = await model.createAdapter({ seed: 3 });
    await randomiseB(adapter, 4, 0.05);
    await saveAdapter(adapter, join(dir, 'adapter'), { baseModel: 'HuggingFaceTB/SmolLM2-135M-Instruct' });
    const [prompt] = model.prepare([request]);
    const sequences = prompt.sequences.map((s) => [prompt.promptTokens, s.tokens]);
    const logprobs = (d: TargetDistribution) => d.targets.map((t) => t.logprob);
    const ours = logprobs(await model.targetLogProbs(request, { adapter }));
    const oursBase = logprobs(await model.targetLogProbs(request));

    // BF16 halves what is written and read; both sides load the same BF16 weights.
    await mergeAdapter(gguf, join(dir, 'adapter'), join(dir, 'merged'), { dtype: 'BF16' });
    const merged = await loadModel(join(dir, 'merged'));
    const [mergedPrompt] = merged.prepare([request]);
    expect(mergedPrompt.promptTokens).toEqual(prompt.promptTokens);
    const oursMerged = logprobs(await merged.targetLogProbs(request));

    const [peft, hf] = reference([
      {
        model: dirname(gguf),
        gguf_file: basename(gguf),
        adapter: join(dir, 'adapter'),
        sequences,
        peft_adapter: { dir: join(dir, 'peft-written'), r: 2, lora_alpha: 0.5, target_modules: ['q_proj', 'v_proj', 'down_proj'], use_rslora: true, seed: 0 },
      },
      { model: join(dir, 'merged'), sequences, chat: [{ role: 'user', content: request.request }] },
    ]);
    ours.forEach((x, i) => expect(Math.abs(x - peft.logprobs![i])).toBeLessThan(2e-3));
    oursBase.forEach((x, i) => expect(Math.abs(x - peft.base_logprobs[i])).toBeLessThan(2e-3));
    // The adapter matters, so matching with it applied is not matching without it.
    expect(Math.max(...ours.map((x, i) => Math.abs(x - oursBase[i])))).toBeGreaterThan(0.05);
    expect(hf.chat_ids).toEqual(prompt.promptTokens);
    oursMerged.forEach((x, i) => expect(Math.abs(x - hf.base_logprobs[i])).toBeLessThan(2e-3));

    // And an adapter PEFT wrote (bfloat16, rsLoRA) loads onto our model with PEFT's outputs.
    const written = await readSafetensors(join(dir, 'peft-written', 'adapter_model.safetensors'));
    expect(new Set([...written.tensors.values()].map((t) => t.dtype))).toEqual(new Set(['BF16']));
    const theirs = await loadAdapter(model, join(dir, 'peft-written'));
    expect(theirs.targetModules).toEqual(['q_proj', 'v_proj', 'down_proj']);
    const oursUnderTheirs = logprobs(await model.targetLogProbs(request, { adapter: theirs }));
    oursUnderTheirs.forEach((x, i) => expect(Math.abs(x - peft.peft_adapter_logprobs![i])).toBeLessThan(2e-3));
    expect(Math.max(...oursUnderTheirs.map((x, i) => Math.abs(x - oursBase[i])))).toBeGreaterThan(0.05);
    theirs.dispose();
    merged.dispose();
    adapter.dispose();
  }, 600_000);

  // Every family's tiny transformers-made model (test/fixtures/families): PEFT loads the adapter
  // we save onto transformers' model of that family and gives our target log-probabilities.
  it('PEFT reproduces our adapters on every model family', async () => {
    const families = ['qwen3', 'gemma', 'gemma2', 'gemma3_text', 'phi3', 'phi3_longrope', 'phi4_partial']; // llama and mistral: the SmolLM2 test above
    const fixtures = join(packageRoot, 'test', 'fixtures', 'families');
    const requests: object[] = [];
    const oursAll: number[][] = [];
    for (const family of families) {
      const tiny = await loadModel(join(fixtures, family), { device: 'cpu', progress: new Progress({ mode: 'silent' }) });
      const adapter = await tiny.createAdapter({ rank: 2, alpha: 4, seed: 7 });
      await randomiseB(adapter, 8, 0.3);
      await saveAdapter(adapter, join(dir, `${family}-adapter`), { baseModel: family });
      const [prompt] = tiny.prepare([request]);
      requests.push({ model: join(fixtures, family), adapter: join(dir, `${family}-adapter`), sequences: prompt.sequences.map((s) => [prompt.promptTokens, s.tokens]) });
      oursAll.push((await tiny.targetLogProbs(request, { adapter })).targets.map((t) => t.logprob));
      adapter.dispose();
      tiny.dispose();
    }
    const results = reference(requests);
    families.forEach((family, f) => {
      const worst = Math.max(...oursAll[f].map((x, i) => Math.abs(x - results[f].logprobs![i])));
      expect({ family, worst }).toEqual({ family, worst: expect.any(Number) });
      expect(worst).toBeLessThan(1e-4);
      expect(Math.max(...oursAll[f].map((x, i) => Math.abs(x - results[f].base_logprobs[i])))).toBeGreaterThan(1e-2);
    });
  }, 600_000);
});
