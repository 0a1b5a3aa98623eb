/**
 * diffuse train: LoRA-tune a model toward the target distributions of tasks — from a config
 * file (the paper's YAML, plus our keys) or from flags — and save the adapter in PEFT layout.
 */
import { join, resolve } from 'node:path';

import type { Command } from 'commander';

import { DiffuseError, InvalidArgumentError } from '../../errors.js';
import { makeDirectory, writeTextAtomically } from '../../atomic-write.js';
import { DEFAULT_MODEL } from '../../model/default-model.js';
import type { Device } from '../../model/load.js';
import { loraModules, type Adapter, type LoraModule } from '../../model/adapter.js';
import type { Model } from '../../model/model.js';
import { Progress } from '../../progress.js';
import type { TargetRequest } from '../../targets/target-set.js';
import { loadTasks, loadTrainConfig, type TrainConfig } from '../../tasks/index.js';
import { adapterOptionsFromConfig, gemDefaults, loraDefaults, trainOptionsFromConfig, type Objective, type StepRecord, type TrainOptions } from '../../train/index.js';
import { CHAT_TEMPLATE_ARG_HELP, loadCliModel, parseChatTemplateArg, parseNumber, parsePositiveInt, parseWholeNumber } from '../common.js';
import { runTraining } from '../training-run.js';

interface TrainFlags {
  model?: string;
  task?: string[];
  out?: string;
  device?: Device;
  threads?: number;
  chatTemplateArg?: Record<string, unknown>;
  iters?: number;
  lr?: number;
  rank?: number;
  alpha?: number;
  modules?: string[];
  objective?: 'ce' | 'gem';
  gemBeta?: number;
  gemH?: 'linear' | 'logsigmoid';
  earlyStop?: boolean;
  gamma?: number;
  seed?: number;
  warmupSteps?: number;
  schedule?: 'constant' | 'cosine';
  promptsPerStep?: number;
  jsonLog?: string;
  resume?: boolean;
  json?: boolean;
}

interface Plan {
  modelSpec: string;
  modelFromConfig: boolean;
  tasks: string[];
  taskCwd: string;
  outDir: string;
  device: Device;
  adapter: { rank: number; alpha: number; targetModules: LoraModule[]; seed: number };
  /** The config's chat_template_kwargs, each --chat-template-arg over it. */
  chatTemplateKwargs?: Record<string, unknown>;
  startFrom?: string;
  options: TrainOptions;
}

/** The objective the flags ask for, or undefined when they ask for none. */
function objectiveFromFlags(f: TrainFlags): Objective | undefined {
  if (f.objective && f.objective !== 'ce' && f.objective !== 'gem') throw new InvalidArgumentError(`--objective must be ce or gem, not '${String(f.objective)}'`);
  if (f.objective === 'gem') return { kind: 'gem', beta: f.gemBeta ?? gemDefaults.beta, h: f.gemH ?? gemDefaults.h };
  if (f.objective === 'ce') return { kind: 'ce' };
  if (f.gemBeta !== undefined || f.gemH !== undefined) throw new InvalidArgumentError('--gem-beta and --gem-h belong to --objective gem; add it');
  return undefined;
}

/** The training options the flags set; undefined where a flag is absent. */
function optionsFromFlags(f: TrainFlags): TrainOptions {
  return {
    nIters: f.iters,
    lr: f.lr,
    earlyStop: f.earlyStop,
    gamma: f.gamma,
    seed: f.seed,
    warmupSteps: f.warmupSteps,
    schedule: f.schedule,
    promptsPerStep: f.promptsPerStep,
    objective: objectiveFromFlags(f),
  };
}

/** `base` with every option that `flags` sets replaced by the flag's value. */
function overridden(base: TrainOptions, flags: TrainOptions): TrainOptions {
  const out: TrainOptions = { ...base };
  for (const [key, value] of Object.entries(flags) as [keyof TrainOptions, unknown][]) if (value !== undefined) (out as Record<string, unknown>)[key] = value;
  return out;
}

function planFromFlags(f: TrainFlags): Plan {
  if (!f.task?.length) throw new InvalidArgumentError('say what to train on: diffuse train CONFIG.yaml, or --task ID|FILE|DIR … with --out DIR');
  if (!f.out) throw new InvalidArgumentError('--out DIR is needed: where the adapter, the log and the checkpoints go');
  return {
    modelSpec: f.model ?? DEFAULT_MODEL,
    modelFromConfig: false,
    tasks: f.task,
    taskCwd: process.cwd(),
    outDir: resolve(f.out),
    device: f.device ?? 'auto',
    chatTemplateKwargs: f.chatTemplateArg,
    adapter: { rank: f.rank ?? loraDefaults.rank, alpha: f.alpha ?? loraDefaults.alpha, targetModules: (f.modules ?? [...loraModules]) as LoraModule[], seed: f.seed ?? loraDefaults.seed },
    options: overridden({ objective: { kind: 'ce' } }, optionsFromFlags(f)),
  };
}

/** The config's plan; any flag given on the command line overrides the config's value. */
function planFromConfig(config: TrainConfig, f: TrainFlags): Plan {
  const a = adapterOptionsFromConfig(config);
  return {
    modelSpec: f.model ?? config.model,
    modelFromConfig: f.model === undefined,
    tasks: config.trainPrompts,
    taskCwd: process.cwd(),
    outDir: config.outputDir,
    device: f.device ?? config.device,
    adapter: {
      rank: f.rank ?? a.rank!,
      alpha: f.alpha ?? a.alpha!,
      targetModules: (f.modules as LoraModule[] | undefined) ?? a.targetModules!,
      seed: f.seed ?? a.seed!,
    },
    chatTemplateKwargs: { ...config.chatTemplateKwargs, ...f.chatTemplateArg },
    startFrom: config.loadModel ? config.ckptDir : undefined,
    // A model swapped in with --model is the adapter's base, not the config's model.
    options: { ...overridden(trainOptionsFromConfig(config), optionsFromFlags(f)), baseModel: f.model === undefined ? config.model : undefined },
  };
}

/** Loads the plan's model; a config's model that cannot be had gets a hint about --model. */
async function loadPlanModel(plan: Plan, f: TrainFlags): Promise<Model> {
  try {
    return await loadCliModel({ model: plan.modelSpec, device: plan.device, threads: f.threads, chatTemplateArg: plan.chatTemplateKwargs }, Boolean(f.json));
  } catch (error) {
    if (plan.modelFromConfig && error instanceof DiffuseError && ['NOT_FOUND', 'NETWORK', 'UNSUPPORTED'].includes(error.code))
      throw new DiffuseError(
        error.code,
        `the config's model '${plan.modelSpec}' is not available here: ${error.message}\nTrain another model on the same tasks with --model SPEC (for example --model ${DEFAULT_MODEL}).`,
      );
    throw error;
  }
}

export function registerTrain(program: Command): void {
  program
    .command('train')
    .argument('[config]', 'a training config (the paper\'s YAML: model, train_prompts, alg_config, output_dir, … plus lora, lr, objective, seed, …)')
    .description('LoRA-tune a model so its answers spread over each task\'s targets as the weights ask (uniformly by default)')
    .option('-m, --model <spec>', 'the model (overrides the config\'s model)')
    .option('-t, --task <task...>', 'task files, directories or built-in ids to train on (without a config)')
    .option('-o, --out <dir>', 'where the adapter (PEFT layout), the log and the checkpoints go (overrides output_dir)')
    .option('--device <device>', 'auto, cpu, cuda or cuda:N')
    .option('--threads <n>', 'CPU threads', (v) => parsePositiveInt(v, '--threads'))
    .option('--chat-template-arg <name=value>', CHAT_TEMPLATE_ARG_HELP, parseChatTemplateArg)
    .option('--iters <n>', 'passes over the prompts (default 50)', (v) => parsePositiveInt(v, '--iters'))
    .option('--lr <lr>', 'AdamW learning rate (default 5e-5, the paper\'s)', (v) => parseNumber(v, '--lr'))
    .option('--rank <r>', 'LoRA rank (default 4)', (v) => parsePositiveInt(v, '--rank'))
    .option('--alpha <a>', 'LoRA alpha (default 8)', (v) => parseNumber(v, '--alpha'))
    .option('--modules <module...>', 'linear layers to adapt (default q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)')
    .option('--objective <kind>', 'ce (the paper\'s) or gem')
    .option('--gem-beta <beta>', 'GEM temperature β (default 0.7)', (v) => parseNumber(v, '--gem-beta'))
    .option('--gem-h <h>', 'GEM h: linear or logsigmoid (default linear)')
    .option('--early-stop', 'stop once a pass\'s loss is within γ of the optimum')
    .option('--gamma <g>', 'early-stop slack γ (default 0.2)', (v) => parseNumber(v, '--gamma'))
    .option('--seed <s>', 'seed of the adapter init and the prompt order (default 0)', (v) => parseWholeNumber(v, '--seed'))
    .option('--warmup-steps <n>', 'linear warmup steps (default 0)', (v) => parseWholeNumber(v, '--warmup-steps'))
    .option('--schedule <kind>', 'constant (default) or cosine')
    .option('--prompts-per-step <n>', 'prompts per optimiser step (default 1, the paper\'s)', (v) => parsePositiveInt(v, '--prompts-per-step'))
    .option('--json-log <file>', 'the JSONL log of every step (default OUT/train-log.jsonl)')
    .option('--resume', 'continue from the latest checkpoint in OUT/checkpoints')
    .option('--json', 'print one JSON object with the run\'s records at the end')
    .action(async (configPath: string | undefined, f: TrainFlags) => {
      const config = configPath
        ? await loadTrainConfig(configPath, { cwd: process.cwd(), outputDir: f.out, warn: (m) => process.stderr.write(`diffuse: warning: ${m}\n`) })
        : undefined;
      if (config && f.task) throw new InvalidArgumentError('give either a config file or --task, not both (the config names its train_prompts)');
      const plan = config ? planFromConfig(config, f) : planFromFlags(f);
      const tasks = await loadTasks(plan.tasks, { cwd: plan.taskCwd });
      const empty = tasks.filter((t) => !t.hasTargets);
      if (empty.length) throw new InvalidArgumentError(`${empty.map((t) => t.source).join(', ')} ha${empty.length > 1 ? 've' : 's'} no targets, so there is nothing to train toward (such prompts are for evaluation: diffuse eval --samples N)`);
      const model = await loadPlanModel(plan, f);
      let adapter: Adapter | undefined;
      try {
        const requests: TargetRequest[] = tasks.flatMap((t) => t.prompts);
        const names = tasks.flatMap((t) => t.prompts.map((_, i) => (t.prompts.length > 1 ? `${t.name}#${i}` : t.name)));
        const prompts = model.prepare(requests, { warn: (m) => process.stderr.write(`diffuse: warning: ${m}\n`) });
        adapter = plan.startFrom ? await model.loadAdapter(plan.startFrom) : await model.createAdapter(plan.adapter);
        const progress = new Progress({ json: Boolean(f.json) });
        if (!f.json)
          progress.log(
            `training a rank-${adapter.rank} LoRA (${adapter.parameterCount.toLocaleString('en')} parameters) on ${prompts.length} prompt(s) from ${tasks.map((t) => t.name).join(', ')} → ${plan.outDir}`,
          );
        const records: StepRecord[] = [];
        await makeDirectory(plan.outDir);
        const outcome = await runTraining({
          model,
          adapter,
          prompts,
          names,
          options: plan.options,
          outDir: plan.outDir,
          logFile: f.jsonLog ? resolve(f.jsonLog) : undefined,
          resume: f.resume,
          progress,
          onStep: (r) => void records.push(r),
        });
        const summary = {
          model: plan.modelSpec,
          device: model.device,
          adapter: outcome.adapterDir,
          log: outcome.logFile,
          stopped: outcome.stopped,
          steps: outcome.steps,
          passes: outcome.passes,
          seconds: outcome.elapsed,
          lastPass: outcome.lastPass ?? null,
        };
        await writeTextAtomically(join(plan.outDir, 'training.json'), `${JSON.stringify({ ...summary, options: plan.options, adapterOptions: plan.adapter, tasks: plan.tasks }, null, 2)}\n`);
        if (f.json) process.stdout.write(`${JSON.stringify({ ...summary, records }, null, 2)}\n`);
        else {
          const last = outcome.lastPass;
          process.stdout.write(
            `${outcome.stopped === 'signal' ? 'stopped' : 'trained'}: ${outcome.steps} steps, ${outcome.passes} passes in ${outcome.elapsed.toFixed(1)} s` +
              (last ? `; last pass loss ${last.loss.toFixed(4)} (optimal ${last.optimalLoss.toFixed(4)})` : '') +
              `\nadapter: ${outcome.adapterDir}\nmeasure it: diffuse logprobs --model ${plan.modelSpec} --adapter ${outcome.adapterDir} --task ${plan.tasks.join(' ')}\n`,
          );
        }
        if (outcome.stopped === 'signal') process.exitCode = 130;
      } finally {
        adapter?.dispose();
        model.dispose();
      }
    });
}
