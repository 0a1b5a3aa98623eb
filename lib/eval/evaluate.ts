/**
 * evaluate(): every measure of lib/eval/metrics.ts for a model (with or without an adapter) on
 * a list of tasks — exact where a prompt has targets, sampled when samples are asked for — as
 * one JSON-ready object, per prompt and per task (the task's figures are the means over its
 * prompts, as the paper's Tables 5 and 6 report them).
 */
import { InvalidArgumentError } from '../errors.js';
import type { Adapter } from '../model/adapter.js';
import type { Model } from '../model/model.js';
import type { Progress } from '../progress.js';
import type { TargetRequest } from '../targets/target-set.js';
import {
  exactMetrics,
  isBiographyRequest,
  sampledMetricsWithReplicates,
  type ExactMetrics,
  type FieldMetrics,
  type SampledMetrics,
  type SampledReplicates,
} from './metrics.js';
import { sample, type FinishReason, type SampleOptions } from './sample.js';
import { intervalOf, type Interval } from './stats.js';

/** A named list of prompts (a Task from loadTasks fits). */
export interface EvalTask {
  name: string;
  prompts: TargetRequest[];
}

/** What evaluate measures: samples per prompt and their settings, the adapter, bootstrap and coverage sizes. */
export interface EvaluateOptions extends Omit<SampleOptions, 'n' | 'onProgress' | 'adapter'> {
  adapter?: Adapter;
  /** Samples per prompt (default 0: exact measures only). */
  samples?: number;
  /** Put every sample's text and answer in the result (default false: the first five only). */
  keepSamples?: boolean;
  /** Bootstrap resamples for the intervals (default 1000). */
  bootstrap?: number;
  /** N of the exact expected coverage when no samples are drawn (default 1000, the paper's). */
  coverageN?: number;
  progress?: Progress;
  warn?: (message: string) => void;
}

/** One sample kept in an evaluation (keepSamples). */
export interface SampleRecord {
  text: string;
  answer?: string;
  valid: boolean;
  finishReason: FinishReason;
  tokens: number;
}

/** A prompt's sampled measures (coverage, entropy, validity, diversity) and how its samples ended. */
export interface PromptSampled extends SampledMetrics {
  /** How the samples ended. */
  finishReasons: Record<FinishReason, number>;
  /** Mean generated tokens per sample (stop token included). */
  meanTokens: number;
  /** The first five samples, to read. */
  examples: string[];
  samples?: SampleRecord[];
}

/** One prompt's measures: exact (when it has targets) and sampled (when samples were drawn). */
export interface PromptEvaluation {
  request: string;
  targets: string[];
  exact?: ExactMetrics;
  sampled?: PromptSampled;
}

/** A task's exact measures, means over its prompts with targets. */
export interface TaskExact {
  /** Means over the task's prompts with targets. */
  entropy: number;
  optimalEntropy: number;
  kl: number;
  outsideMass: number;
  expectedCoverage: { n: number; value: number };
  /** When every prompt has the same targets: the mean of their pθ per target. */
  distribution?: { target: string; prob: number; weight: number }[];
}

/** A task's sampled measures, means over its prompts with bootstrap intervals. */
export interface TaskSampled {
  /** Samples per prompt. */
  n: number;
  /** Means over the task's prompts, with joint bootstrap intervals. */
  coverage: number;
  /** Mean distinct answers in the target set, when every prompt has one. */
  targetCoverage?: number;
  entropy: number;
  validRate: number;
  parsedRate: number;
  unigramDiversity: number;
  intervals: { coverage: Interval; entropy: Interval; validRate: Interval; parsedRate: Interval; unigramDiversity: Interval };
  /** The prompt's fields, when the task is one biography prompt. */
  fields?: FieldMetrics[];
}

/** One task's measures: per prompt and over the task. */
export interface TaskEvaluation {
  task: string;
  prompts: PromptEvaluation[];
  exact?: TaskExact;
  sampled?: TaskSampled;
}

/** The sampling settings an evaluation used. */
export interface EvaluationSettings {
  samples: number;
  temperature: number;
  topK: number;
  topP: number;
  maxTokens: number;
  seed: number;
}

/** What evaluate returns: the model, the settings, every task's measures, and the sampling speed. */
export interface Evaluation {
  model: string;
  device: string;
  adapter: boolean;
  settings: EvaluationSettings;
  tasks: TaskEvaluation[];
  /** Sampling speed over the whole run. */
  throughput?: { tokens: number; seconds: number; tokensPerSecond: number };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function taskExact(prompts: PromptEvaluation[]): TaskExact | undefined {
  const exact = prompts.flatMap((p) => (p.exact ? [p.exact] : []));
  if (exact.length === 0) return undefined;
  const out: TaskExact = {
    entropy: mean(exact.map((e) => e.entropy)),
    optimalEntropy: mean(exact.map((e) => e.optimalEntropy)),
    kl: mean(exact.map((e) => e.kl)),
    outsideMass: mean(exact.map((e) => e.outsideMass)),
    expectedCoverage: { n: exact[0].expectedCoverage.n, value: mean(exact.map((e) => e.expectedCoverage.value)) },
  };
  const key = (e: ExactMetrics) => JSON.stringify(e.distribution.map((t) => [t.target, t.weight]));
  if (exact.every((e) => key(e) === key(exact[0])))
    out.distribution = exact[0].distribution.map((t, i) => ({ target: t.target, prob: mean(exact.map((e) => e.distribution[i].prob)), weight: t.weight }));
  return out;
}

/** The task's sampled figures: means over its prompts, with joint bootstrap intervals. */
export function taskSampled(prompts: PromptEvaluation[], reps: SampledReplicates[]): TaskSampled | undefined {
  const sampled = prompts.flatMap((p) => (p.sampled ? [p.sampled] : []));
  if (sampled.length === 0) return undefined;
  // Replicate r of a mean is the mean of the prompts' replicates r (prompts resample independently).
  const meanReplicates = (pick: (r: SampledReplicates) => Float64Array) =>
    Float64Array.from(pick(reps[0]), (_, r) => mean(reps.map((x) => pick(x)[r])));
  const figure = (name: 'coverage' | 'entropy' | 'validRate' | 'parsedRate' | 'unigramDiversity', bounds: { min?: number; max?: number }) => {
    const value = mean(sampled.map((s) => s[name]));
    return { value, interval: intervalOf(value, meanReplicates((r) => r[name]), bounds) };
  };
  const n = sampled[0].n;
  const coverage = figure('coverage', { min: 0, max: n });
  const entropy = figure('entropy', { min: 0 });
  const validRate = figure('validRate', { min: 0, max: 1 });
  const parsedRate = figure('parsedRate', { min: 0, max: 1 });
  const unigramDiversity = figure('unigramDiversity', { min: 0, max: 1 });
  const out: TaskSampled = {
    n,
    coverage: coverage.value,
    entropy: entropy.value,
    validRate: validRate.value,
    parsedRate: parsedRate.value,
    unigramDiversity: unigramDiversity.value,
    intervals: {
      coverage: coverage.interval,
      entropy: entropy.interval,
      validRate: validRate.interval,
      parsedRate: parsedRate.interval,
      unigramDiversity: unigramDiversity.interval,
    },
  };
  if (sampled.every((s) => s.targetCoverage !== undefined)) out.targetCoverage = mean(sampled.map((s) => s.targetCoverage!));
  if (sampled.length === 1 && sampled[0].fields) out.fields = sampled[0].fields;
  return out;
}

/** A sample as the sampled measures read it. */
export interface MeasuredSample {
  text: string;
  finishReason: FinishReason;
  /** Generated tokens, the stop token left out. */
  tokens: number;
}

/**
 * The sampled measures of one prompt's samples, given in sample order (the bootstrap resamples
 * by position), as evaluate() reports them; `generatedTokens` counts stop tokens too.
 */
export function measureSamples(
  request: TargetRequest,
  samples: readonly MeasuredSample[],
  generatedTokens: number,
  o: { bootstrap: number; seed: number; keepSamples?: boolean },
): { sampled: PromptSampled; replicates: SampledReplicates } {
  const texts = samples.map((s) => s.text);
  const { metrics, replicates, perSample } = sampledMetricsWithReplicates(texts, {
    targets: request.targets,
    biography: isBiographyRequest(request.request),
    resamples: o.bootstrap,
    seed: o.seed,
  });
  const finishReasons: Record<FinishReason, number> = { stop: 0, length: 0 };
  for (const s of samples) finishReasons[s.finishReason]++;
  const sampled: PromptSampled = {
    ...metrics,
    finishReasons,
    meanTokens: samples.length === 0 ? 0 : generatedTokens / samples.length,
    examples: texts.slice(0, 5),
  };
  if (o.keepSamples) sampled.samples = samples.map((s, k) => ({ text: s.text, ...perSample[k], finishReason: s.finishReason, tokens: s.tokens }));
  return { sampled, replicates };
}

/** Every measure of `model` (with `options.adapter`, if given) on `tasks`. */
export async function evaluate(model: Model, tasks: readonly EvalTask[], options: EvaluateOptions = {}): Promise<Evaluation> {
  const samples = options.samples ?? 0;
  if (!Number.isSafeInteger(samples) || samples < 0) throw new InvalidArgumentError(`samples must be a whole number ≥ 0, not ${samples}`);
  const bootstrap = options.bootstrap ?? 1000;
  if (!Number.isSafeInteger(bootstrap) || bootstrap < 0) throw new InvalidArgumentError(`bootstrap must be a whole number ≥ 0, not ${bootstrap}`);
  const coverageN = samples > 0 ? samples : (options.coverageN ?? 1000);
  const settings: EvaluationSettings = {
    samples,
    temperature: options.temperature ?? 1,
    topK: options.topK ?? 0,
    topP: options.topP ?? 1,
    maxTokens: options.maxTokens ?? 64,
    seed: options.seed ?? 0,
  };
  const open = tasks.filter((t) => t.prompts.some((p) => p.targets.length === 0));
  if (samples === 0 && open.length > 0)
    throw new InvalidArgumentError(`task ${open[0].name} has a prompt without targets, which only sampling can measure; ask for samples (e.g. 1000, the paper's)`);

  let tokens = 0, seconds = 0;
  const results: TaskEvaluation[] = [];
  for (const task of tasks) {
    const withTargets = task.prompts.filter((p) => p.targets.length > 0);
    const distributions = withTargets.length > 0 ? await model.targetDistributions(withTargets, { adapter: options.adapter, warn: options.warn }) : [];
    const prompts: PromptEvaluation[] = [];
    const reps: SampledReplicates[] = [];
    for (const [i, request] of task.prompts.entries()) {
      const evaluation: PromptEvaluation = { request: request.request, targets: request.targets.slice() };
      const at = withTargets.indexOf(request);
      if (at >= 0) evaluation.exact = exactMetrics(distributions[at], coverageN);
      if (samples > 0) {
        const label = task.prompts.length > 1 ? `${task.name}#${i}` : task.name;
        const bar = options.progress?.task(`sampling ${label}`, { total: samples, unit: 'samples' });
        const drawn = await sample(model, request.request, {
          ...options,
          n: samples,
          adapter: options.adapter,
          onProgress: (finished) => bar?.update(finished),
        });
        tokens += drawn.generatedTokens;
        seconds += drawn.seconds;
        bar?.done(`${(drawn.generatedTokens / drawn.seconds).toFixed(1)} tokens/s`);
        const { sampled, replicates } = measureSamples(
          request,
          drawn.samples.map((s) => ({ text: s.text, finishReason: s.finishReason, tokens: s.tokens.length })),
          drawn.generatedTokens,
          { bootstrap, seed: settings.seed, keepSamples: options.keepSamples },
        );
        reps.push(replicates);
        evaluation.sampled = sampled;
      }
      prompts.push(evaluation);
    }
    const result: TaskEvaluation = { task: task.name, prompts };
    const exact = taskExact(prompts);
    if (exact) result.exact = exact;
    const sampled = taskSampled(prompts, reps);
    if (sampled) result.sampled = sampled;
    results.push(result);
  }
  const evaluation: Evaluation = { model: model.spec, device: model.device, adapter: options.adapter !== undefined, settings, tasks: results };
  if (tokens > 0) evaluation.throughput = { tokens, seconds, tokensPerSecond: tokens / seconds };
  return evaluation;
}
