/** diffuse merge: a model with its LoRA adapter folded into the weights, as a Hugging Face directory. */
import { resolve } from 'node:path';

import type { Command } from 'commander';

import { mergeAdapter } from '../../adapters/merge.js';
import { InvalidArgumentError } from '../../errors.js';
import { DEFAULT_MODEL } from '../../model/default-model.js';
import { resolveModel } from '../../model/resolve.js';
import { Progress } from '../../progress.js';

interface MergeFlags {
  model: string;
  adapter?: string;
  out?: string;
  dtype: string;
  json?: boolean;
}

export function registerMerge(program: Command): void {
  program
    .command('merge')
    .description('fold a LoRA adapter into its model: W + (α/r)·B·A, written as a Hugging Face directory (config.json, model.safetensors, tokenizer)')
    .option('-m, --model <spec>', 'the base model the adapter was trained on', DEFAULT_MODEL)
    .option('-a, --adapter <dir>', 'the adapter directory (PEFT layout)')
    .option('-o, --out <dir>', 'the directory to write')
    .option('--dtype <dtype>', 'f32 or bf16', 'f32')
    .option('--json', 'print one JSON object')
    .action(async (f: MergeFlags) => {
      if (!f.adapter) throw new InvalidArgumentError('--adapter DIR is needed: the adapter to merge');
      if (!f.out) throw new InvalidArgumentError('--out DIR is needed: where the merged model goes');
      const dtype = f.dtype.toUpperCase();
      if (dtype !== 'F32' && dtype !== 'BF16') throw new InvalidArgumentError(`--dtype must be f32 or bf16, not '${f.dtype}'`);
      const progress = new Progress({ json: Boolean(f.json) });
      const source = await resolveModel(f.model, { progress });
      const task = progress.task('merging', { unit: 'tensors' });
      const result = await mergeAdapter(source.format === 'gguf' ? source.path : source.dir, resolve(f.adapter), resolve(f.out), {
        dtype,
        onTensor: (done, total) => task.update(done, total),
        warn: (m) => progress.log(`diffuse: warning: ${m}`),
      });
      task.done(`${result.merged} of ${result.tensors} weight tensors carry the adapter`);
      if (f.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      else process.stdout.write(`merged model: ${result.dir}\nload it with: diffuse logprobs --model ${result.dir} …, or transformers' AutoModelForCausalLM.from_pretrained\n`);
    });
}
