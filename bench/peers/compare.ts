/**
 * The pure part of the peer benchmark (run.ts): summaries over repeats and the agreement checks
 * between diffuse and the reference stack.
 */

/** Median and range of repeated measurements. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(values: number[]): Spread {
  if (values.length === 0) throw new RangeError('spread of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], n: sorted.length };
}

/** |a − b|, with NaN on either side counted as an infinite gap. */
function gapOf(a: number, b: number): number {
  const gap = Math.abs(a - b);
  return Number.isNaN(gap) ? Infinity : gap;
}

export interface NamedLogProb {
  name: string;
  logprob: number;
}

/** The outcome of one agreement check: what was compared, the worst gap, and whether it passed. */
export interface CheckResult {
  check: string;
  passed: boolean;
  /** The largest gap found (nats for log-probs, a fraction for losses). */
  worst: number;
  tolerance: number;
  detail: string;
}

/**
 * Per-target log-probs of the same targets under both stacks agree: each gap within
 * `tolerance` nats plus `relative` times the size of the reference's log-prob (0 for fp32; the
 * design's 1e-2 where one side computes in bf16).
 */
export function compareLogProbs(check: string, ours: NamedLogProb[], theirs: NamedLogProb[], tolerance: number, relative = 0): CheckResult {
  const theirsByName = new Map(theirs.map((t) => [t.name, t.logprob]));
  const oursNames = new Set(ours.map((t) => t.name));
  const missing = ours.filter((t) => !theirsByName.has(t.name)).map((t) => t.name);
  const extra = theirs.filter((t) => !oursNames.has(t.name)).map((t) => t.name);
  if (missing.length > 0 || extra.length > 0 || ours.length === 0)
    return {
      check,
      passed: false,
      worst: Infinity,
      tolerance,
      detail: `the stacks scored different target sets: only ours ${JSON.stringify(missing.slice(0, 5))}, only theirs ${JSON.stringify(extra.slice(0, 5))}`,
    };
  let worst = 0;
  let worstName = ours[0].name;
  let over = 0;
  for (const o of ours) {
    const ref = theirsByName.get(o.name)!;
    const gap = gapOf(o.logprob, ref);
    if (!(gap <= tolerance + relative * Math.abs(ref))) over += 1;
    if (gap > worst) {
      worst = gap;
      worstName = o.name;
    }
  }
  const allowed = relative > 0 ? `${tolerance} nats + ${relative} × |theirs|` : `${tolerance} nats`;
  const w = ours.find((o) => o.name === worstName)!;
  return {
    check,
    passed: over === 0,
    worst,
    tolerance,
    detail:
      `${ours.length} targets, ${over} over ${allowed}; largest gap ${worst.toExponential(2)} nats on ${JSON.stringify(worstName)} ` +
      `(ours ${w.logprob.toFixed(5)}, theirs ${theirsByName.get(worstName)!.toFixed(5)})`,
  };
}

/** The first `steps` losses of two training curves agree within a relative `tolerance`. */
export function compareLossCurves(check: string, ours: number[], theirs: number[], steps: number, tolerance: number): CheckResult {
  const n = Math.min(steps, ours.length, theirs.length);
  if (n === 0 || ours.length !== theirs.length)
    return { check, passed: false, worst: Infinity, tolerance, detail: `the curves have ${ours.length} (ours) and ${theirs.length} (theirs) steps` };
  let worst = 0;
  let at = 0;
  for (let i = 0; i < n; i++) {
    const rel = gapOf(ours[i], theirs[i]) / Math.abs(theirs[i]);
    if (rel > worst) {
      worst = rel;
      at = i;
    }
  }
  return {
    check,
    passed: worst <= tolerance,
    worst,
    tolerance,
    detail: `first ${n} steps, largest relative gap ${(100 * worst).toFixed(3)}% at step ${at + 1} (ours ${ours[at].toFixed(5)}, theirs ${theirs[at].toFixed(5)})`,
  };
}

/** Both stacks fed the model the same token ids: the prompt and every target. */
export function compareTokens(
  check: string,
  ours: { prompt: number[]; targets: { name: string; tokens: number[] }[] },
  theirs: { prompt: number[]; targets: { name: string; tokens: number[] }[] },
): CheckResult {
  const differ: string[] = [];
  if (ours.prompt.join(',') !== theirs.prompt.join(',')) differ.push(`prompt: ours [${ours.prompt.join(',')}], theirs [${theirs.prompt.join(',')}]`);
  const theirsByName = new Map(theirs.targets.map((t) => [t.name, t.tokens.join(',')]));
  for (const t of ours.targets) {
    const other = theirsByName.get(t.name);
    if (other !== t.tokens.join(',')) differ.push(`${JSON.stringify(t.name)}: ours [${t.tokens.join(',')}], theirs [${other ?? 'absent'}]`);
  }
  if (theirs.targets.length !== ours.targets.length) differ.push(`target count: ours ${ours.targets.length}, theirs ${theirs.targets.length}`);
  return {
    check,
    passed: differ.length === 0,
    worst: differ.length,
    tolerance: 0,
    detail: differ.length === 0 ? `prompt of ${ours.prompt.length} tokens and ${ours.targets.length} targets identical` : `${differ.length} differ: ${differ.slice(0, 3).join('; ')}`,
  };
}

/** log(mean(exp(xs))): a target's probability averaged over its responses. */
export function logMeanExp(xs: number[]): number {
  const top = Math.max(...xs);
  return top + Math.log(xs.reduce((s, x) => s + Math.exp(x - top), 0) / xs.length);
}
