/**
 * Makes test/fixtures/reference/peft/: what Hugging Face PEFT does with a tiny Llama and our
 * adapters, for test/adapters/peft-fixture.test.ts to check without Python.
 *
 *   1. writes the suite's tiny random Llama (makeTinyModel, seeded) as a transformers directory
 *      and our adapter (createAdapter + randomiseB, seeded) in PEFT layout;
 *   2. runs tools/reference/peft_logprobs.py: transformers' log-probabilities of the sequences
 *      without and with our adapter (PeftModel.from_pretrained), and PEFT's own adapter
 *      (get_peft_model, rsLoRA, bf16) saved into the fixture with its log-probabilities;
 *   3. writes logprobs.json with the SHA-256 of our adapter file, so the test knows it scores
 *      the very adapter PEFT loaded.
 *
 *   npx tsx tools/reference/peft_fixture.ts [python]   (default ~/.cache/diffuse/pyenv/bin/python)
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

import { saveAdapter } from '../../lib/adapters/peft.js';
import { packageRoot } from '../../lib/native.js';
import { makeTinyModel } from '../../test/helpers/tiny-model.js';
import { writeHfDirectory } from '../../test/helpers/write-safetensors.js';
import { peftFixture } from '../../test/adapters/peft-fixture-spec.js';
import { randomiseB, tinyTrainingModel } from '../../test/train/tiny-training.js';

const python = process.argv[2] ?? join(homedir(), '.cache', 'diffuse', 'pyenv', 'bin', 'python');
const out = join(packageRoot, 'test', 'fixtures', 'reference', 'peft');
const work = await mkdtemp(join(tmpdir(), 'diffuse-peft-fixture-'));
const spec = peftFixture;

await writeHfDirectory(join(work, 'model'), makeTinyModel(spec.model));
const { model } = await tinyTrainingModel(spec.model);
const adapter = await model.createAdapter(spec.ours.adapter);
await randomiseB(adapter, spec.ours.bSeed, spec.ours.bScale);
await saveAdapter(adapter, join(work, 'ours'));
adapter.dispose();
model.dispose();

await rm(join(out, 'peft-adapter'), { recursive: true, force: true });
const reply = execFileSync(python, [join(packageRoot, 'tools', 'reference', 'peft_logprobs.py')], {
  input: JSON.stringify({ model: join(work, 'model'), adapter: join(work, 'ours'), sequences: spec.sequences, peft_adapter: { dir: join(out, 'peft-adapter'), ...spec.peft } }),
  maxBuffer: 1 << 24,
});
const result = JSON.parse(reply.toString()) as { base_logprobs: number[]; logprobs: number[]; peft_adapter_logprobs: number[] };
const versions = execFileSync(python, ['-c', 'import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)']).toString().trim().split(' ');
await writeFile(
  join(out, 'logprobs.json'),
  `${JSON.stringify(
    {
      made_by: 'tools/reference/peft_fixture.ts',
      versions: { torch: versions[0], transformers: versions[1], peft: versions[2] },
      ours_sha256: createHash('sha256').update(await readFile(join(work, 'ours', 'adapter_model.safetensors'))).digest('hex'),
      base_logprobs: result.base_logprobs,
      ours_logprobs: result.logprobs,
      peft_adapter_logprobs: result.peft_adapter_logprobs,
    },
    null,
    1,
  )}\n`,
);
await rm(join(out, 'peft-adapter', 'README.md'), { force: true }); // PEFT's model-card boilerplate
await rm(work, { recursive: true, force: true });
console.log(`wrote ${out}`);
