/**
 * The summary of a generated dataset: per prompt, eval's sampled measures of its first N
 * samples in index order — coverage, entropy, the valid rate and, for the paper's biography
 * prompt, each field's coverage, entropy and most frequent values (its Table 2) — so the same
 * seed gives the figures `diffuse eval --samples N` gives. It is an Evaluation, so eval's
 * table printer and HTML report show it.
 */
import { measureSamples, taskSampled, type Evaluation, type PromptEvaluation, type TaskEvaluation } from '../eval/evaluate.js';
import type { SampledReplicates } from '../eval/metrics.js';
import type { Dataset } from './dataset.js';
import type { PromptGroup } from './prompts.js';

export interface SummaryContext {
  model: string;
  device: string;
  adapter: boolean;
  n: number;
  seed: number;
  temperature: number;
  topK: number;
  topP: number;
  maxTokens: number;
  /** Bootstrap resamples for the intervals (default 1000, eval's). */
  bootstrap?: number;
}

export function summarize(dataset: Dataset, groups: readonly PromptGroup[], c: SummaryContext): Evaluation {
  const tasks: TaskEvaluation[] = groups.map((group) => {
    const prompts: PromptEvaluation[] = [];
    const reps: SampledReplicates[] = [];
    for (const p of group.prompts) {
      const own = dataset.lines.get(p.id)!;
      const lines = Array.from({ length: c.n }, (_, i) => own.get(i)).filter((l) => l !== undefined);
      const { sampled, replicates } = measureSamples(
        p.request,
        lines.map((l) => ({ text: l.text, finishReason: l.finish_reason, tokens: l.tokens - (l.finish_reason === 'stop' ? 1 : 0) })),
        lines.reduce((s, l) => s + l.tokens, 0),
        { bootstrap: c.bootstrap ?? 1000, seed: c.seed },
      );
      reps.push(replicates);
      prompts.push({ request: p.request.request, targets: p.request.targets.slice(), sampled });
    }
    const task: TaskEvaluation = { task: group.name, prompts };
    const sampled = taskSampled(prompts, reps);
    if (sampled) task.sampled = sampled;
    return task;
  });
  return {
    model: c.model,
    device: c.device,
    adapter: c.adapter,
    settings: { samples: c.n, temperature: c.temperature, topK: c.topK, topP: c.topP, maxTokens: c.maxTokens, seed: c.seed },
    tasks,
  };
}
