/**
 * The diffuse command line as a commander program. Each command lives in its own file under
 * commands/ and registers itself here.
 */
import { Command } from 'commander';

import { registerDemo } from './commands/demo.js';
import { registerEval } from './commands/eval.js';
import { registerExport } from './commands/export.js';
import { registerGenerate } from './commands/generate.js';
import { registerLogprobs } from './commands/logprobs.js';
import { registerMerge } from './commands/merge.js';
import { registerTasks } from './commands/tasks.js';
import { registerTrain } from './commands/train.js';
import { packageVersion } from './common.js';

export function buildProgram(): Command {
  const program = new Command('diffuse')
    .description('Fine-tune language models so they stop collapsing onto one answer, and measure how diffuse they are.')
    .version(packageVersion())
    .showHelpAfterError()
    .configureHelp({ sortSubcommands: false });
  registerDemo(program);
  registerLogprobs(program);
  registerTrain(program);
  registerEval(program);
  registerGenerate(program);
  registerMerge(program);
  registerExport(program);
  registerTasks(program);
  return program;
}
