/** diffuse export: a trained adapter in another runtime's format; today llama.cpp's GGUF LoRA. */
import { resolve } from 'node:path';

import type { Command } from 'commander';

import { ggufLoraBase, writeGgufLora } from '../../adapters/gguf-lora.js';
import { readAdapterWeights } from '../../adapters/peft.js';
import { InvalidArgumentError } from '../../errors.js';
import { checkWritable } from '../../generate/dataset.js';
import { DEFAULT_MODEL } from '../../model/default-model.js';

interface ExportFlags {
  model: string;
  adapter?: string;
  format: string;
  out?: string;
  dtype: string;
  json?: boolean;
}

export function registerExport(program: Command): void {
  program
    .command('export')
    .description("write a LoRA adapter for llama.cpp (Ollama, node-llama-cpp, LM Studio): --format gguf-lora, run with llama-cli -m BASE.gguf --lora FILE.gguf")
    .option('-m, --model <spec>', 'the base model the adapter was trained on (its GGUF layout decides the Q/K row order)', DEFAULT_MODEL)
    .option('-a, --adapter <dir>', 'the adapter directory (PEFT layout)')
    .option('--format <format>', 'gguf-lora', 'gguf-lora')
    .option('-o, --out <file.gguf>', 'the file to write')
    .option('--dtype <dtype>', 'f32 or f16', 'f32')
    .option('--json', 'print one JSON object')
    .action(async (f: ExportFlags) => {
      if (f.format !== 'gguf-lora') throw new InvalidArgumentError(`--format must be gguf-lora (llama.cpp's LoRA adapter GGUF), not '${f.format}'`);
      if (!f.adapter) throw new InvalidArgumentError('--adapter DIR is needed: the adapter to export');
      if (!f.out) throw new InvalidArgumentError('--out FILE.gguf is needed: where the adapter goes');
      const dtype = f.dtype.toUpperCase();
      if (dtype !== 'F32' && dtype !== 'F16') throw new InvalidArgumentError(`--dtype must be f32 or f16, not '${f.dtype}'`);
      checkWritable(f.out, '--out');
      const base = await ggufLoraBase(f.model);
      const weights = await readAdapterWeights(f.adapter, base.config, f.model);
      await writeGgufLora(f.out, { ...weights, alpha: weights.config.alpha }, base, { dtype, name: resolve(f.adapter).split(/[\\/]/).pop() });
      const result = { out: resolve(f.out), format: 'gguf-lora', architecture: base.architecture, permutedQk: base.permutedQk, rank: weights.config.rank, alpha: weights.config.alpha, modules: weights.modules, dtype };
      if (f.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      else
        process.stdout.write(
          `wrote ${result.out}: rank ${result.rank}, alpha ${result.alpha}, ${result.modules.join(', ')} (architecture ${base.architecture}${base.permutedQk ? ', Q/K rows permuted as the base GGUF' : ''})\nrun it with: llama-cli -m BASE.gguf --lora ${f.out}, or diffuse generate --adapter ${f.out}\n`,
        );
    });
}
