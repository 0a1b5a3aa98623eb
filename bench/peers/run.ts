/**
 * diffuse against the paper's own stack (HF transformers + PEFT + PyTorch, bench/peers/
 * reference_train.py), side by side: the same GGUF, the same tasks, the same LoRA init, the same
 * hyper-parameters, the same thread count, one machine, one command.
 *
 *   npm run bench:peers -- [--device cpu|cuda] [--threads 2] [--repeats 3] [--passes 50]
 *                          [--train-repeats N] [--cases a,b,c] [--seed 0] [--python PATH]
 *                          [--gguf FILE] [--runs-dir DIR] [--out FILE]
 *
 * Cases, each repeated, every run in a process of its own (so peak RSS is that run's), the two
 * stacks alternating (which goes first flips every repeat):
 *   (a) rng-step    one optimiser step on RNG 1–10 (data/tasks/reference/prompts/numbers/rng-0.json)
 *   (b) names-step  one optimiser step over the 200 baby names (one prompt)
 *   (c) rng-train   `--passes` passes (default 50) over RNG 1–10, one step per pass
 * Reported per case and stack: seconds per step (median of a run's steps; median and range over
 * repeats), positions computed per step, peak RSS, and after training the exact loss and the
 * entropy of the model's distribution renormalised over the target set.
 *
 * Agreement, all of which must hold or the command exits 1 (after writing the results):
 * - both stacks feed the model identical token ids (prompt and every target);
 * - per-target log-probs before training (the shared init: A drawn once by diffuse and saved in
 *   PEFT layout, B = 0) within 2e-3 nats, on both tasks (on CUDA, where diffuse computes in
 *   bf16 and the reference in the paper's float32, within 2e-3 nats + 1 % of the log-prob: the
 *   design's bf16 tolerance);
 * - the training losses of the first 10 steps within 1 % (each run against the other stack's
 *   run of the same repeat).
 *
 * The reference environment: `--python`, else the venv of tools/python/setup-env.sh
 * ($DIFFUSE_HOME/pyenv), else a system python3 that already has the packages (GPU machines
 * without network), else setup-env.sh is run to make the venv (needs PyPI; about 17 minutes).
 * The model: the default SmolLM2-135M-Instruct Q4_1 GGUF (fetched once into $DIFFUSE_HOME), or
 * `--gguf FILE` (a machine without network needs a copy there); transformers dequantizes it to
 * float32 for the reference.
 * `--train-repeats` sets the repeats of (c) alone (default `--repeats`): its 50 steps already give
 * a per-run median, and it is most of the reference's time. `--runs-dir DIR` keeps every run's
 * JSON and the shared init there, and a rerun with the same DIR reuses each run already done
 * with the same device, threads and steps (an interrupted benchmark resumes; without it, a
 * temporary directory is used and removed).
 * DIFFUSE_CPU_ISA=avx2 holds both stacks to AVX2 on an AVX-512 machine: our kernels capped, the
 * reference's MKL, OpenBLAS and oneDNN through their own variables (bench/blas-ceiling.ts
 * referenceIsaCap; recorded in the results' machine.referenceIsaCap).
 * Results: bench/results/peers-<device>.json. Exit codes: 0 agreed, 1 a check failed, 2 bad
 * arguments, 3 no usable reference environment, 4 a run failed.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { saveAdapter } from '../../lib/adapters/index.js';
import { diffuseHome, ensureDefaultModel } from '../../lib/model/default-model.js';
import { loadModel } from '../../lib/model/load.js';
import type { TargetDistribution } from '../../lib/model/model.js';
import { native } from '../../lib/native.js';
import { Progress } from '../../lib/progress.js';
import { loadTasks } from '../../lib/tasks/index.js';
import { train } from '../../lib/train/index.js';
import { referenceIsaCap } from '../blas-ceiling.js';
import { compareLogProbs, compareLossCurves, compareTokens, logMeanExp, spread, type CheckResult, type NamedLogProb, type Spread } from './compare.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const self = fileURLToPath(import.meta.url);

const TASKS = {
  rng: 'data/tasks/reference/prompts/numbers/rng-0.json',
  names: 'data/tasks/reference/prompts/baby-names/train.json',
} as const;
type TaskKey = keyof typeof TASKS;

interface CaseSpec {
  id: 'a' | 'b' | 'c';
  name: string;
  task: TaskKey;
  steps: number;
  /** Record the log-probs before training in this case's first repeat (the init-agreement check). */
  initialEval: boolean;
}

const LOGPROB_TOLERANCE = 2e-3;
/** Relative log-prob tolerance by device: diffuse's CUDA backend runs bf16 weights and activations. */
const LOGPROB_RELATIVE = { cpu: 0, cuda: 1e-2 } as const;
const LOSS_TOLERANCE = 0.01;
const LOSS_STEPS = 10;
const PY_PACKAGES = ['torch', 'transformers', 'peft', 'gguf', 'safetensors'];

type Stack = 'diffuse' | 'reference';

interface Evaluation {
  loss: number;
  entropy: number;
  targets: NamedLogProb[];
}

interface Tokens {
  prompt: number[];
  targets: { name: string; tokens: number[] }[];
}

/** One process's run of one case on one stack. */
interface RunResult {
  stack: Stack;
  case: CaseSpec['id'];
  repeat: number;
  device: string;
  threads: number;
  loadSeconds: number;
  /** cpuSeconds: the process's CPU time over the step, all threads (absent in older runs). */
  steps: { loss: number; seconds: number; positions: number; cpuSeconds?: number }[];
  peakRssBytes: number;
  peakCudaBytes?: number;
  initial?: Evaluation;
  final: Evaluation;
  tokens?: Tokens;
  versions: Record<string, string>;
}

interface Options {
  device: 'cpu' | 'cuda';
  threads: number;
  repeats: number;
  trainRepeats?: number;
  passes: number;
  cases: CaseSpec['id'][];
  seed: number;
  python?: string;
  gguf?: string;
  runsDir?: string;
  out: string;
}

class UsageError extends Error {}

function parseArgs(argv: string[]): Options {
  const o: Options = { device: 'cpu', threads: 2, repeats: 3, passes: 50, cases: ['a', 'b', 'c'], seed: 0, out: '' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    const whole = (min: number) => {
      const v = value();
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag} must be a whole number ≥ ${min}, not ${v}`);
      return n;
    };
    switch (flag) {
      case '--device': {
        const d = value();
        if (d !== 'cpu' && d !== 'cuda') throw new UsageError(`--device must be cpu or cuda, not ${d}`);
        o.device = d;
        break;
      }
      case '--threads': o.threads = whole(1); break;
      case '--repeats': o.repeats = whole(1); break;
      case '--train-repeats': o.trainRepeats = whole(1); break;
      case '--runs-dir': o.runsDir = resolve(value()); break;
      case '--passes': o.passes = whole(LOSS_STEPS); break;
      case '--seed': o.seed = whole(0); break;
      case '--python': o.python = value(); break;
      case '--gguf': {
        const path = resolve(value());
        if (!existsSync(path)) throw new UsageError(`--gguf ${path}: no such file`);
        o.gguf = path;
        break;
      }
      case '--out': o.out = value(); break;
      case '--cases': {
        const list = value().split(',').map((s) => s.trim());
        for (const c of list) if (c !== 'a' && c !== 'b' && c !== 'c') throw new UsageError(`--cases takes a comma list of a, b, c, not ${c}`);
        o.cases = [...new Set(list)] as CaseSpec['id'][];
        break;
      }
      default:
        throw new UsageError(`unknown option ${flag}; see the comment at the top of bench/peers/run.ts`);
    }
  }
  if (o.out === '') o.out = join(repoRoot, 'bench', 'results', `peers-${o.device}.json`);
  return o;
}

function cases(o: Options): CaseSpec[] {
  const all: CaseSpec[] = [
    { id: 'a', name: '(a) RNG 1–10, one step', task: 'rng', steps: 1, initialEval: true },
    { id: 'b', name: '(b) 200 baby names, one step', task: 'names', steps: 1, initialEval: true },
    { id: 'c', name: `(c) RNG 1–10, ${o.passes} passes`, task: 'rng', steps: o.passes, initialEval: false },
  ];
  return all.filter((c) => o.cases.includes(c.id));
}

// ---------------------------------------------------------------------------------------------
// Our side, in a child process: `run.ts --worker SPEC.json`

interface WorkerSpec {
  kind: 'init' | 'run';
  device: 'cpu' | 'cuda';
  threads: number;
  gguf: string;
  adapterDir: string;
  seed: number;
  out: string;
  task?: string;
  steps?: number;
  initialEval?: boolean;
  caseId?: CaseSpec['id'];
  repeat?: number;
}

function evaluation(d: TargetDistribution): Evaluation {
  return { loss: d.loss, entropy: d.entropy, targets: d.targets.map((t) => ({ name: t.target, logprob: t.logprob })) };
}

async function worker(spec: WorkerSpec): Promise<void> {
  native().setThreads(spec.threads);
  const t0 = performance.now();
  const model = await loadModel(spec.gguf, { device: spec.device, threads: spec.threads, progress: new Progress({ mode: 'silent' }) });
  if (spec.kind === 'init') {
    // The one LoRA init both stacks start from: A Kaiming-uniform as PEFT draws it, B = 0.
    const adapter = await model.createAdapter({ rank: 4, alpha: 8, seed: spec.seed });
    for (const t of adapter.tensors().filter((t) => t.name.endsWith('lora_B')))
      if ((await adapter.getTensor(t.name)).some((x) => x !== 0)) throw new Error(`a fresh adapter's ${t.peftKey} is not zero`);
    await saveAdapter(adapter, spec.adapterDir);
    writeFileSync(spec.out, JSON.stringify({ seed: spec.seed, parameters: adapter.parameterCount }));
    return;
  }
  const [task] = await loadTasks([spec.task!], { cwd: repoRoot });
  const prompts = model.prepare(task.prompts);
  const adapter = await model.loadAdapter(spec.adapterDir);
  const loadSeconds = (performance.now() - t0) / 1000;
  const initial = spec.initialEval ? evaluation((await model.targetDistributions(task.prompts, { adapter }))[0]) : undefined;
  const steps: RunResult['steps'] = [];
  const cpuNow = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  let cpuBefore = cpuNow();
  await train(model, adapter, prompts, {
    nIters: spec.steps!,
    onStep: (r) => {
      const seconds = r.positions / r.positionsPerSecond;
      const cpu = cpuNow();
      steps.push({ loss: r.loss, seconds, positions: r.positions, cpuSeconds: cpu - cpuBefore });
      cpuBefore = cpu;
      process.stdout.write(`step ${r.step - 1}: loss ${r.loss.toFixed(4)} (optimal ${r.optimalLoss.toFixed(4)}) ${seconds.toFixed(3)} s, ${r.positions} positions\n`);
    },
  });
  const final = evaluation((await model.targetDistributions(task.prompts, { adapter }))[0]);
  process.stdout.write(`final: loss ${final.loss.toFixed(4)}, entropy over targets ${final.entropy.toFixed(4)}\n`);
  const p = prompts[0];
  const result: RunResult = {
    stack: 'diffuse',
    case: spec.caseId!,
    repeat: spec.repeat!,
    device: model.device,
    threads: native().threadCount(),
    loadSeconds,
    steps,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    initial,
    final,
    tokens: {
      prompt: p.promptTokens,
      targets: p.targets.map((name, t) => ({ name, tokens: p.sequences.find((s) => s.target === t)!.tokens })),
    },
    versions: { node: process.versions.node, diffuse: JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')).version },
  };
  writeFileSync(spec.out, JSON.stringify(result));
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Runs a command, echoing its output lines with a prefix; rejects on a non-zero exit. */
function runLogged(prefix: string, command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const tail: string[] = [];
    const echo = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        tail.push(line);
        if (tail.length > 20) tail.shift();
        process.stderr.write(`  ${prefix} ${line}\n`);
      }
    };
    child.stdout.on('data', echo);
    child.stderr.on('data', echo);
    child.on('error', fail);
    child.on('close', (code, signal) =>
      code === 0 ? done() : fail(new Error(`${prefix} ${command} ${args.join(' ')} exited with ${code ?? signal}; last output:\n${tail.join('\n')}`)),
    );
  });
}

interface PythonEnv {
  python: string;
  source: string;
  versions: Record<string, string>;
}

/** The packages' versions under `python`, or why it cannot serve as the reference. */
function probePython(python: string, device: Options['device']): { versions: Record<string, string> } | { error: string } {
  const script = [
    'import json, sys',
    'from importlib.metadata import version',
    `names = ${JSON.stringify(PY_PACKAGES)}`,
    'import torch, transformers, peft, gguf, safetensors',
    `cuda = torch.cuda.is_available()`,
    `print(json.dumps({"python": sys.version.split()[0], **{n: version(n) for n in names}, "torch_cuda": str(cuda)}))`,
  ].join('\n');
  const r = spawnSync(python, ['-c', script], { encoding: 'utf8' });
  if (r.error) return { error: `${python}: ${r.error.message}` };
  if (r.status !== 0) return { error: `${python}: ${r.stderr.trim().split('\n').pop()}` };
  const versions = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, string>;
  if (device === 'cuda' && versions.torch_cuda !== 'True') return { error: `${python}: torch ${versions.torch} sees no CUDA device` };
  return { versions };
}

async function referenceEnv(o: Options): Promise<PythonEnv> {
  const venv = join(diffuseHome(), 'pyenv', 'bin', 'python');
  const tried: string[] = [];
  const candidates: [string, string][] = o.python ? [[o.python, '--python']] : [[venv, 'setup-env.sh venv'], ['python3', 'system python3']];
  for (const [python, source] of candidates) {
    if (source === 'setup-env.sh venv' && !existsSync(venv)) {
      tried.push(`${venv}: absent`);
      continue;
    }
    const probe = probePython(python, o.device);
    if ('versions' in probe) return { python, source, versions: probe.versions };
    tried.push(probe.error);
  }
  if (o.python) throw new EnvError(`--python ${o.python} cannot run the reference: ${tried.join('; ')}. It needs ${PY_PACKAGES.join(', ')} (tools/python/requirements.txt).`);
  process.stderr.write(
    `No Python with ${PY_PACKAGES.join(', ')} found (${tried.join('; ')}).\n` +
      `Creating the reference environment with tools/python/setup-env.sh at ${dirname(dirname(venv))} (PyPI; about 17 minutes, ~6 GB)…\n`,
  );
  try {
    await runLogged('[setup-env]', 'bash', [join(repoRoot, 'tools', 'python', 'setup-env.sh'), dirname(dirname(venv))]);
  } catch (error) {
    throw new EnvError(
      `tools/python/setup-env.sh failed, so the reference stack cannot run here: ${(error as Error).message}\n` +
        `Fix what it reports (it needs python3 >= 3.10 with venv, cmake, a C++ compiler and PyPI), or pass --python PATH to an interpreter that has ${PY_PACKAGES.join(', ')}.`,
    );
  }
  const probe = probePython(venv, o.device);
  if ('error' in probe) throw new EnvError(`setup-env.sh finished but the venv cannot run the reference: ${probe.error}`);
  return { python: venv, source: 'setup-env.sh venv (just created)', versions: probe.versions };
}

class EnvError extends Error {}

function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

interface ReferenceReport {
  device: string;
  device_name: string | null;
  threads: number;
  versions: Record<string, string>;
  load_seconds: number;
  steps: { loss: number; seconds: number; positions: number; cpu_seconds?: number }[];
  peak_rss_bytes: number;
  peak_cuda_allocated_bytes?: number;
  initial: ReferenceEval[] | null;
  final: ReferenceEval[];
}
interface ReferenceEval {
  targets: { name: string; logprob: number | number[] }[];
  loss: number;
  entropy_over_targets: number;
}
interface SavedTask {
  prompt_token_ids: number[];
  targets: { name: string; token_ids: number[] | number[][] }[];
}

function referenceEvaluation(e: ReferenceEval): Evaluation {
  return {
    loss: e.loss,
    entropy: e.entropy_over_targets,
    targets: e.targets.map((t) => ({ name: t.name, logprob: Array.isArray(t.logprob) ? logMeanExp(t.logprob) : t.logprob })),
  };
}

async function runReference(env: PythonEnv, o: Options, c: CaseSpec, repeat: number, gguf: string, adapterDir: string, work: string): Promise<RunResult> {
  const out = join(work, `reference-${c.id}-${repeat}.json`);
  const taskOut = join(work, `reference-${c.id}-${repeat}-task.json`);
  const initialEval = c.initialEval && repeat === 0;
  const done = existsSync(out) && existsSync(taskOut) ? readJson<ReferenceReport>(out) : undefined;
  const reusable = done && done.device === o.device && done.threads === o.threads && done.steps.length === c.steps && (!initialEval || done.initial);
  if (reusable) process.stderr.write(`  [reference] reusing ${out}\n`);
  else await spawnReference(env, o, c, gguf, adapterDir, out, taskOut, initialEval);
  return referenceResult(env, c, repeat, out, taskOut);
}

async function spawnReference(env: PythonEnv, o: Options, c: CaseSpec, gguf: string, adapterDir: string, out: string, taskOut: string, initialEval: boolean): Promise<void> {
  const args = [
    join(repoRoot, 'bench', 'peers', 'reference_train.py'),
    '--gguf', gguf,
    '--task', join(repoRoot, TASKS[c.task]),
    '--steps', String(c.steps),
    '--device', o.device,
    '--threads', String(o.threads),
    '--init-adapter', adapterDir,
    '--save-task', taskOut,
    '--out', out,
    ...(initialEval ? ['--initial-eval'] : []),
  ];
  await runLogged('[reference]', env.python, args, { ...process.env, ...referenceIsaCap(), OMP_NUM_THREADS: String(o.threads), MKL_NUM_THREADS: String(o.threads) });
}

function referenceResult(env: PythonEnv, c: CaseSpec, repeat: number, out: string, taskOut: string): RunResult {
  const r = readJson<ReferenceReport>(out);
  const task = readJson<SavedTask>(taskOut);
  const first = (ids: number[] | number[][]) => (Array.isArray(ids[0]) ? (ids as number[][])[0] : (ids as number[]));
  return {
    stack: 'reference',
    case: c.id,
    repeat,
    device: r.device_name ? `cuda:${r.device_name}` : 'cpu',
    threads: r.threads,
    loadSeconds: r.load_seconds,
    steps: r.steps.map((s) => ({ loss: s.loss, seconds: s.seconds, positions: s.positions, cpuSeconds: s.cpu_seconds })),
    peakRssBytes: r.peak_rss_bytes,
    peakCudaBytes: r.peak_cuda_allocated_bytes,
    initial: r.initial ? referenceEvaluation(r.initial[0]) : undefined,
    final: referenceEvaluation(r.final[0]),
    tokens: { prompt: task.prompt_token_ids, targets: task.targets.map((t) => ({ name: t.name, tokens: first(t.token_ids) })) },
    versions: { python: env.versions.python, ...r.versions },
  };
}

async function runOurs(o: Options, c: CaseSpec, repeat: number, gguf: string, adapterDir: string, work: string): Promise<RunResult> {
  const spec: WorkerSpec = {
    kind: 'run',
    device: o.device,
    threads: o.threads,
    gguf,
    adapterDir,
    seed: o.seed,
    out: join(work, `diffuse-${c.id}-${repeat}.json`),
    task: TASKS[c.task],
    steps: c.steps,
    initialEval: c.initialEval && repeat === 0,
    caseId: c.id,
    repeat,
  };
  const done = existsSync(spec.out) ? readJson<RunResult>(spec.out) : undefined;
  if (done && done.device.startsWith(o.device) && done.threads === o.threads && done.steps.length === c.steps && (!spec.initialEval || done.initial)) {
    process.stderr.write(`  [diffuse]   reusing ${spec.out}\n`);
    return done;
  }
  await spawnWorker('[diffuse]  ', spec, work);
  return readJson<RunResult>(spec.out);
}

async function spawnWorker(prefix: string, spec: WorkerSpec, work: string): Promise<void> {
  const file = join(work, `spec-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(spec));
  await runLogged(prefix, process.execPath, ['--import', 'tsx', self, '--worker', file], { ...process.env, DIFFUSE_THREADS: String(spec.threads) });
}

// ---------------------------------------------------------------------------------------------
// Summary, checks, report

interface CaseSummary {
  case: CaseSpec['id'];
  name: string;
  steps: number;
  stacks: Record<Stack, {
    /** Per run, the median of its steps' seconds; then the spread over runs. */
    stepSeconds: Spread;
    positionsPerStep: number;
    peakRssMiB: Spread;
    /** CPU seconds ÷ (wall seconds × threads) per step, median per run: below 1, the run lost cores to other processes. */
    cpuShare?: Spread;
    finalLoss: Spread;
    finalEntropy: Spread;
  }>;
  /** reference / diffuse, of the median step seconds. */
  speedup: number;
  finalLossGap: number;
  finalEntropyGap: number;
}

function summarise(c: CaseSpec, runs: RunResult[]): CaseSummary {
  const side = (stack: Stack) => {
    const mine = runs.filter((r) => r.case === c.id && r.stack === stack);
    return {
      stepSeconds: spread(mine.map((r) => spread(r.steps.map((s) => s.seconds)).median)),
      positionsPerStep: mine[0].steps[0].positions,
      peakRssMiB: spread(mine.map((r) => r.peakRssBytes / 2 ** 20)),
      cpuShare: mine.every((r) => r.steps.every((s) => s.cpuSeconds !== undefined))
        ? spread(mine.map((r) => spread(r.steps.map((s) => s.cpuSeconds! / s.seconds / r.threads)).median))
        : undefined,
      finalLoss: spread(mine.map((r) => r.final.loss)),
      finalEntropy: spread(mine.map((r) => r.final.entropy)),
    };
  };
  const stacks = { diffuse: side('diffuse'), reference: side('reference') };
  return {
    case: c.id,
    name: c.name,
    steps: c.steps,
    stacks,
    speedup: stacks.reference.stepSeconds.median / stacks.diffuse.stepSeconds.median,
    finalLossGap: stacks.diffuse.finalLoss.median - stacks.reference.finalLoss.median,
    finalEntropyGap: stacks.diffuse.finalEntropy.median - stacks.reference.finalEntropy.median,
  };
}

function checks(specs: CaseSpec[], runs: RunResult[], device: Options['device']): CheckResult[] {
  const out: CheckResult[] = [];
  const pair = (c: CaseSpec, repeat: number) => {
    const ours = runs.find((r) => r.case === c.id && r.repeat === repeat && r.stack === 'diffuse')!;
    const theirs = runs.find((r) => r.case === c.id && r.repeat === repeat && r.stack === 'reference')!;
    return { ours, theirs };
  };
  const tokensChecked = new Set<TaskKey>();
  for (const c of specs) {
    const { ours, theirs } = pair(c, 0);
    if (!tokensChecked.has(c.task)) {
      tokensChecked.add(c.task);
      out.push(compareTokens(`token ids, ${c.task}`, ours.tokens!, theirs.tokens!));
    }
    if (ours.initial && theirs.initial)
      out.push(compareLogProbs(`per-target log-probs before training, ${c.task}`, ours.initial.targets, theirs.initial.targets, LOGPROB_TOLERANCE, LOGPROB_RELATIVE[device]));
    const repeats = Math.max(...runs.filter((r) => r.case === c.id).map((r) => r.repeat)) + 1;
    for (let r = 0; r < repeats; r++) {
      const p = pair(c, r);
      out.push(compareLossCurves(`loss curve, ${c.name}, repeat ${r + 1}`, p.ours.steps.map((s) => s.loss), p.theirs.steps.map((s) => s.loss), LOSS_STEPS, LOSS_TOLERANCE));
    }
  }
  return out;
}

const fmtSpread = (s: Spread, digits: number) => `${s.median.toFixed(digits)} [${s.min.toFixed(digits)}–${s.max.toFixed(digits)}]`;

function table(summaries: CaseSummary[]): string {
  const rows = ['case                              stack      s/step median [range]     positions/step  peak RSS MiB  CPU share  final loss  final entropy'];
  for (const s of summaries) {
    for (const stack of ['diffuse', 'reference'] as Stack[]) {
      const x = s.stacks[stack];
      rows.push(
        `${(stack === 'diffuse' ? s.name : '').padEnd(33)} ${stack.padEnd(10)} ${fmtSpread(x.stepSeconds, 3).padEnd(25)} ${String(x.positionsPerStep).padStart(14)} ${x.peakRssMiB.median.toFixed(0).padStart(13)} ${(x.cpuShare ? `${(100 * x.cpuShare.median).toFixed(0)}%` : 'n/a').padStart(10)} ${x.finalLoss.median.toFixed(4).padStart(11)} ${x.finalEntropy.median.toFixed(4).padStart(14)}`,
      );
    }
    rows.push(`${''.padEnd(33)} speed-up ${s.speedup.toFixed(1)}× per step; final loss gap ${s.finalLossGap.toExponential(1)}, entropy gap ${s.finalEntropyGap.toExponential(1)}`);
  }
  return rows.join('\n');
}

function gitCommit(): { commit: string; dirty: boolean } {
  const rev = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' });
  const status = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot, encoding: 'utf8' });
  return { commit: rev.stdout.trim(), dirty: status.stdout.trim() !== '' };
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--worker') {
    await worker(readJson<WorkerSpec>(argv[1]));
    return 0;
  }
  let o: Options;
  try {
    o = parseArgs(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`bench:peers: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  let env: PythonEnv;
  try {
    env = await referenceEnv(o);
  } catch (error) {
    if (error instanceof EnvError) {
      process.stderr.write(`bench:peers: ${error.message}\n`);
      return 3;
    }
    throw error;
  }
  process.stderr.write(`reference stack: ${env.python} (${env.source}): ${PY_PACKAGES.map((n) => `${n} ${env.versions[n]}`).join(', ')}\n`);
  const gguf = o.gguf ?? (await ensureDefaultModel());
  const work = o.runsDir ?? mkdtempSync(join(tmpdir(), 'diffuse-peers-'));
  mkdirSync(work, { recursive: true });
  const adapterDir = join(work, 'init-adapter');
  const specs = cases(o);
  const runs: RunResult[] = [];
  const started = new Date();
  const code = gitCommit();
  try {
    const initFile = join(work, 'init.json');
    const init = existsSync(initFile) && existsSync(join(adapterDir, 'adapter_model.safetensors')) ? readJson<{ seed?: number }>(initFile) : undefined;
    if (init && init.seed !== o.seed) throw new Error(`${work} holds runs from LoRA init seed ${init.seed}, not --seed ${o.seed}; give another --runs-dir`);
    if (init) process.stderr.write(`reusing the shared LoRA init (seed ${o.seed}) in ${adapterDir}\n`);
    else {
      process.stderr.write(`drawing the shared LoRA init (seed ${o.seed}) into ${adapterDir}\n`);
      await spawnWorker('[init]     ', { kind: 'init', device: o.device, threads: o.threads, gguf, adapterDir, seed: o.seed, out: initFile }, work);
    }
    const trainRepeats = o.trainRepeats ?? o.repeats;
    for (let repeat = 0; repeat < Math.max(o.repeats, trainRepeats); repeat++)
      for (const c of specs) {
        if (repeat >= (c.id === 'c' ? trainRepeats : o.repeats)) continue;
        const order: Stack[] = repeat % 2 === 0 ? ['diffuse', 'reference'] : ['reference', 'diffuse'];
        for (const stack of order) {
          process.stderr.write(`${c.name}, repeat ${repeat + 1}/${o.repeats}: ${stack}\n`);
          runs.push(stack === 'diffuse' ? await runOurs(o, c, repeat, gguf, adapterDir, work) : await runReference(env, o, c, repeat, gguf, adapterDir, work));
        }
      }
  } catch (error) {
    process.stderr.write(`bench:peers: a run failed, nothing written: ${(error as Error).message}\n`);
    return 4;
  } finally {
    if (!o.runsDir) rmSync(work, { recursive: true, force: true });
  }

  const summaries = specs.map((c) => summarise(c, runs));
  const results = checks(specs, runs, o.device);
  const ours = runs.find((r) => r.stack === 'diffuse')!;
  const theirs = runs.find((r) => r.stack === 'reference')!;
  const report = {
    benchmark: 'diffuse vs the paper stack (HF transformers + PEFT + PyTorch), bench/peers/run.ts',
    date: started.toISOString(),
    ...code,
    machine: { cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: totalmem() / 2 ** 30, device: o.device, diffuseDevice: ours.device, referenceDevice: theirs.device, gemmIsa: native().gemmIsa(), referenceIsaCap: referenceIsaCap() },
    threads: o.threads,
    repeats: o.repeats,
    trainRepeats: o.trainRepeats ?? o.repeats,
    model: gguf.replace(diffuseHome(), '$DIFFUSE_HOME'),
    hyperParameters: { lora: { r: 4, alpha: 8, modules: 'q,k,v,o,gate,up,down', init: `diffuse createAdapter seed ${o.seed}, B = 0, loaded by both` }, adamw: { lr: 5e-5, eps: 1e-5, betas: [0.9, 0.999], weightDecay: 0.01 }, clipGradNorm: 1 },
    versions: { diffuse: ours.versions, reference: { ...theirs.versions, pythonSource: env.source } },
    tolerances: { logprobNats: LOGPROB_TOLERANCE, logprobRelative: LOGPROB_RELATIVE[o.device], lossRelative: LOSS_TOLERANCE, lossSteps: LOSS_STEPS },
    summaries,
    checks: results,
    runs,
  };
  writeFileSync(o.out, `${JSON.stringify(report, null, 1)}\n`);
  process.stdout.write(`\n${table(summaries)}\n\nagreement:\n${results.map((r) => `  ${r.passed ? 'ok  ' : 'FAIL'} ${r.check}: ${r.detail}`).join('\n')}\n`);
  process.stderr.write(`wrote ${o.out}\n`);
  const failed = results.filter((r) => !r.passed);
  if (failed.length > 0) {
    process.stderr.write(`bench:peers: ${failed.length} agreement check(s) failed:\n${failed.map((r) => `  ${r.check}: ${r.detail}`).join('\n')}\n`);
    return 1;
  }
  return 0;
}

process.exitCode = await main();
