/**
 * What training minimises: `ce`, the paper's weighted cross-entropy −Σ_y p*(y) log pθ(y|x), or
 * `gem` (Li et al., ICLR 2025), the same kernel with q = softmax(z / β) in its backward.
 */
import { InvalidArgumentError } from '../errors.js';
import type { NativeObjective } from '../native.js';
import { gemDefaults } from './defaults.js';

/** The training objective: cross-entropy, or GEM with its temperature β and h (defaults 0.7, linear). */
export type Objective = { kind: 'ce' } | { kind: 'gem'; beta?: number; h?: 'linear' | 'logsigmoid' };

/** The objective with every default filled in, checked. */
export function resolveObjective(objective: Objective): Objective {
  if (objective?.kind === 'ce') return { kind: 'ce' };
  if (objective?.kind !== 'gem') throw new InvalidArgumentError(`objective kind must be 'ce' or 'gem', not '${String((objective as { kind?: unknown })?.kind)}'`);
  const beta = objective.beta ?? gemDefaults.beta;
  if (!(beta > 0) || !Number.isFinite(beta)) throw new InvalidArgumentError(`GEM beta must be a positive number, not ${beta}`);
  const h = objective.h ?? gemDefaults.h;
  if (h !== 'linear' && h !== 'logsigmoid') throw new InvalidArgumentError(`GEM h must be 'linear' or 'logsigmoid', not '${String(h)}'`);
  return { kind: 'gem', beta, h };
}

/** @internal the engine's form of an objective */
export function toNativeObjective(objective: Objective): NativeObjective {
  const o = resolveObjective(objective);
  return o.kind === 'ce' ? { kind: 'ce' } : { kind: o.h === 'logsigmoid' ? 'gem-logsigmoid' : 'gem-linear', beta: o.beta };
}
