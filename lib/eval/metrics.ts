/**
 * The paper's measures of how diffuse a model's answers are (§2.2), computed two ways.
 *
 * Exact, where the target set T is known: the model's probability of every target from one trie
 * forward — KL(p* ‖ pθ) (eq. 2), the mass pθ puts outside T, the entropy of pθ renormalised over
 * T, and the expected Coverage-N, Σ_y 1 − (1 − pθ(y))^N, the number of distinct targets N
 * samples would produce on average. No sampling noise.
 *
 * Sampled, from N generations: the answer parsed from each (the task format puts it between
 * braces), Coverage-N (eq. 4: distinct answers), the entropy of the empirical distribution of
 * answers (eq. 3), the valid-output rate, and the normalised unigram diversity of the texts;
 * each with a seeded bootstrap 95% interval. For the paper's biography prompt, the same per
 * categorical field (its Table 2 and Tables 7–8).
 */
import type { TargetDistribution } from '../model/model.js';
import { bootstrapWeights, entropyOfCounts, intervalOf, type BootstrapOptions, type Interval } from './stats.js';

// ---- parsing answers -------------------------------------------------------------------------

const braceGroup = /\{([^{}]*)\}/g;

/** The contents of every innermost {…} group of a text, trimmed, in order. */
export function braceGroups(text: string): string[] {
  return [...text.matchAll(braceGroup)].map((m) => m[1].trim());
}

/**
 * The answer in a generation: its first `groups` {…} groups, each trimmed inside its braces and
 * joined by newlines ("{ 5 }" → "{5}"; a biography tuple keeps its four lines); undefined when
 * the text has fewer groups. With groups = 0 (targets written without braces), the whole text,
 * trimmed.
 */
export function parseAnswer(text: string, groups = 1): string | undefined {
  if (groups === 0) {
    const t = text.trim();
    return t === '' ? undefined : t;
  }
  const found = braceGroups(text);
  if (found.length < groups) return undefined;
  return found
    .slice(0, groups)
    .map((g) => `{${g}}`)
    .join('\n');
}

/** How many {…} groups a task's answers have: the number in its targets (1 when it has none). */
export function answerGroups(targets: readonly string[]): number {
  if (targets.length === 0) return 1;
  return Math.max(...targets.map((t) => braceGroups(t).length));
}

// ---- exact metrics ---------------------------------------------------------------------------

/** One target's probability under the model beside p*. */
export interface ExactTarget {
  target: string;
  /** pθ(target | prompt), as generated (not renormalised). */
  prob: number;
  logprob: number;
  /** p*(target). */
  weight: number;
}

/** A prompt's exact measures over its target set: entropy, KL, mass outside, expected coverage, the distribution. */
export interface ExactMetrics {
  /** Entropy (nats) of pθ renormalised over the target set. */
  entropy: number;
  /** H(p*): the most the entropy can be when pθ matches p* (log |T| for uniform weights). */
  optimalEntropy: number;
  /** KL(p* ‖ pθ) (nats), pθ as generated: the paper's eq. 2. */
  kl: number;
  /** 1 − Σ_{y∈T} pθ(y): the probability of generating anything outside the set. */
  outsideMass: number;
  /** Expected number of distinct targets in N samples, Σ_y 1 − (1 − pθ(y))^N, for this N. */
  expectedCoverage: { n: number; value: number };
  /** Every target with its probability, in the task's order. */
  distribution: ExactTarget[];
}

/** Σ_y 1 − (1 − p_y)^N, computed stably for tiny p. */
export function expectedCoverage(probs: readonly number[], n: number): number {
  return probs.reduce((s, p) => s - Math.expm1(n * Math.log1p(-Math.min(p, 1))), 0);
}

export function exactMetrics(d: TargetDistribution, coverageN: number): ExactMetrics {
  return {
    entropy: d.entropy,
    optimalEntropy: d.optimalEntropy,
    kl: d.kl,
    outsideMass: d.outsideMass,
    expectedCoverage: { n: coverageN, value: expectedCoverage(d.targets.map((t) => t.prob), coverageN) },
    distribution: d.targets.map((t) => ({ target: t.target, prob: t.prob, logprob: t.logprob, weight: t.weight })),
  };
}

// ---- sampled metrics -------------------------------------------------------------------------

/** A value and how many samples gave it. */
export interface ValueCount {
  value: string;
  count: number;
}

/** One distinct sampled answer with its count. */
export interface SampledAnswer extends ValueCount {
  /** In the target set (always true when there is none). */
  valid: boolean;
}

/** Measures of N samples of one prompt. */
export interface SampledMetrics {
  /** Samples drawn (N). */
  n: number;
  /** Samples whose text holds an answer in the task format. */
  parsedRate: number;
  /** Samples with an answer that is in the target set (parsed, when the task has no set). */
  validRate: number;
  /** Coverage-N: distinct answers among the N samples, in the set or not. */
  coverage: number;
  /** Distinct answers that are in the target set (when there is one). */
  targetCoverage?: number;
  /** Entropy (nats) of the empirical distribution of the parsed answers. */
  entropy: number;
  /** Normalised unigram diversity of the whole texts: distinct words / words (see unigramDiversity). */
  unigramDiversity: number;
  /** Seeded bootstrap 95% intervals, re-centred on the estimates (see stats.ts). */
  intervals: { parsedRate: Interval; validRate: Interval; coverage: Interval; entropy: Interval; unigramDiversity: Interval };
  /** Every distinct answer with its count, most frequent first. */
  answers: SampledAnswer[];
  /** Per categorical field, for the paper's biography prompt. */
  fields?: FieldMetrics[];
  /** Normalised unigram diversity of the biographies' accomplishment sentences (when any has one). */
  accomplishmentDiversity?: number;
  /** Share of samples that are whole biographies: all six {…} fields. */
  completeBiographies?: number;
}

/** Lower-cased words (runs of letters, digits and apostrophes). */
export function words(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}][\p{L}\p{N}'’]*/gu) ?? [];
}

/**
 * Normalised unigram diversity of a set of texts: the number of distinct words divided by the
 * number of words, over all texts together (distinct-1, Li et al. 2016); words are lower-cased
 * runs of letters and digits. 1 means no word repeats anywhere; it falls as texts repeat each
 * other. It depends on N, so compare it at equal sample counts. 0 when there are no words.
 */
export function unigramDiversity(texts: readonly string[]): number {
  const all = texts.flatMap(words);
  return all.length === 0 ? 0 : new Set(all).size / all.length;
}

/** Integer ids for strings, in order of first appearance. */
class Ids {
  private readonly map = new Map<string, number>();
  readonly values: string[] = [];
  id(value: string): number {
    let id = this.map.get(value);
    if (id === undefined) {
      id = this.values.length;
      this.map.set(value, id);
      this.values.push(value);
    }
    return id;
  }
}

/** One categorical column of N samples (−1 where a sample has no value), with weighted statistics. */
class Column {
  readonly ids = new Ids();
  readonly of: Int32Array;
  constructor(values: readonly (string | undefined)[]) {
    this.of = Int32Array.from(values, (v) => (v === undefined ? -1 : this.ids.id(v)));
  }
  /** Per-value counts with each sample counted `weight[i]` times (once each without weights). */
  counts(weight?: Uint32Array): Float64Array {
    const c = new Float64Array(this.ids.values.length);
    for (let i = 0; i < this.of.length; i++) if (this.of[i] >= 0) c[this.of[i]] += weight ? weight[i] : 1;
    return c;
  }
  coverage(weight?: Uint32Array): number {
    return this.counts(weight).reduce((s, c) => s + (c > 0 ? 1 : 0), 0);
  }
  entropy(weight?: Uint32Array): number {
    return entropyOfCounts(this.counts(weight));
  }
  present(weight?: Uint32Array): number {
    let s = 0;
    for (let i = 0; i < this.of.length; i++) if (this.of[i] >= 0) s += weight ? weight[i] : 1;
    return s;
  }
  top(k = Infinity): ValueCount[] {
    const c = this.counts();
    return this.ids.values
      .map((value, i) => ({ value, count: c[i], first: i }))
      .sort((a, b) => b.count - a.count || a.first - b.first)
      .slice(0, k)
      .map(({ value, count }) => ({ value, count }));
  }
}

/** The words of N texts as word ids, for weighted distinct-1. */
class WordBag {
  private readonly ids = new Ids();
  private readonly perText: Int32Array[];
  constructor(texts: readonly string[]) {
    this.perText = texts.map((t) => Int32Array.from(words(t), (w) => this.ids.id(w)));
  }
  diversity(weight?: Uint32Array): number {
    const seen = new Uint8Array(this.ids.values.length);
    let distinct = 0, total = 0;
    this.perText.forEach((ws, i) => {
      const w = weight ? weight[i] : 1;
      if (w === 0) return;
      total += w * ws.length;
      for (const id of ws)
        if (!seen[id]) {
          seen[id] = 1;
          distinct++;
        }
    });
    return total === 0 ? 0 : distinct / total;
  }
}

/** The replicates of a statistic over bootstrap resamples. */
function replicates(resamples: Uint32Array[], stat: (w: Uint32Array) => number): Float64Array {
  return Float64Array.from(resamples, stat);
}

export interface SampledOptions extends BootstrapOptions {
  /** The target set, when the task has one. */
  targets?: readonly string[];
  /** Treat the texts as biographies and measure each categorical field. */
  biography?: boolean;
}

/** Bootstrap replicates of the sampled figures, kept so task means can get intervals too. */
export interface SampledReplicates {
  parsedRate: Float64Array;
  validRate: Float64Array;
  coverage: Float64Array;
  entropy: Float64Array;
  unigramDiversity: Float64Array;
}

/**
 * How a task reads its answers: `parse` takes a text's answer in the task's format, and
 * `targetSet` (when the task has targets) holds the valid ones in the same form.
 */
export function answerReader(targets?: readonly string[]): { parse: (text: string) => string | undefined; targetSet?: Set<string> } {
  const given = targets && targets.length > 0 ? targets : undefined;
  const groups = answerGroups(given ?? []);
  const targetSet = given ? new Set(given.map((t) => parseAnswer(t, groups) ?? t.trim())) : undefined;
  return { parse: (text) => parseAnswer(text, groups), targetSet };
}

/** The sampled metrics of N generated texts, and their bootstrap replicates. */
export function sampledMetricsWithReplicates(
  texts: readonly string[],
  options: SampledOptions = {},
): { metrics: SampledMetrics; replicates: SampledReplicates; perSample: { answer?: string; valid: boolean }[] } {
  const n = texts.length;
  const { parse, targetSet } = answerReader(options.targets);
  const parsed = texts.map(parse);
  const answers = new Column(parsed);
  const valid = Uint8Array.from(parsed, (a) => (a !== undefined && (!targetSet || targetSet.has(a)) ? 1 : 0));
  const bag = new WordBag(texts);
  const resamples = n > 0 && (options.resamples ?? 1000) > 0 ? bootstrapWeights(n, options) : [];
  const validCount = (w?: Uint32Array) => valid.reduce((s, v, i) => s + (v ? (w ? w[i] : 1) : 0), 0);
  const rate = (x: number) => (n === 0 ? 0 : x / n);

  const reps: SampledReplicates = {
    parsedRate: replicates(resamples, (w) => rate(answers.present(w))),
    validRate: replicates(resamples, (w) => rate(validCount(w))),
    coverage: replicates(resamples, (w) => answers.coverage(w)),
    entropy: replicates(resamples, (w) => answers.entropy(w)),
    unigramDiversity: replicates(resamples, (w) => bag.diversity(w)),
  };
  const point = {
    parsedRate: rate(answers.present()),
    validRate: rate(validCount()),
    coverage: answers.coverage(),
    entropy: answers.entropy(),
    unigramDiversity: bag.diversity(),
  };
  const unit = { min: 0, max: 1 };
  const metrics: SampledMetrics = {
    n,
    ...point,
    intervals: {
      parsedRate: intervalOf(point.parsedRate, reps.parsedRate, unit),
      validRate: intervalOf(point.validRate, reps.validRate, unit),
      coverage: intervalOf(point.coverage, reps.coverage, { min: 0, max: n }),
      entropy: intervalOf(point.entropy, reps.entropy, { min: 0, max: Math.log(Math.max(1, n)) }),
      unigramDiversity: intervalOf(point.unigramDiversity, reps.unigramDiversity, unit),
    },
    answers: answers.top().map((a) => ({ ...a, valid: !targetSet || targetSet.has(a.value) })),
  };
  if (targetSet) metrics.targetCoverage = metrics.answers.filter((a) => a.valid).length;
  if (options.biography) {
    const bios = texts.map(parseBiography);
    metrics.fields = biographyFieldMetrics(bios, resamples);
    const accomplishments = bios.flatMap((b) => (b.accomplishments ? [b.accomplishments] : []));
    if (accomplishments.length > 0) metrics.accomplishmentDiversity = unigramDiversity(accomplishments);
    metrics.completeBiographies = n === 0 ? 0 : texts.filter((t) => braceGroups(t).length >= 6).length / n;
  }
  const perSample = parsed.map((answer, i) => (answer === undefined ? { valid: false } : { answer, valid: valid[i] === 1 }));
  return { metrics, replicates: reps, perSample };
}

export function sampledMetrics(texts: readonly string[], options: SampledOptions = {}): SampledMetrics {
  return sampledMetricsWithReplicates(texts, options).metrics;
}

// ---- biographies -----------------------------------------------------------------------------

/** The categorical fields of the paper's biographies (its Table 2), in its order. */
export const biographyFields = ['first name', 'last name', 'gender', 'birth year', 'birth place', 'profession'] as const;
export type BiographyField = (typeof biographyFields)[number];

export type Biography = Partial<Record<BiographyField | 'accomplishments', string>>;

/**
 * The fields of a biography in the prompt's format — six {…} groups: name, gender, date of
 * birth, place of birth, profession, accomplishments. The first name is the name's first word
 * and the last name its last (when it has two words or more); the birth year is the first
 * four-digit number of the date. Absent groups leave their fields out.
 */
export function parseBiography(text: string): Biography {
  const [name, gender, date, place, profession, accomplishments] = braceGroups(text);
  const bio: Biography = {};
  const set = (field: keyof Biography, value: string | undefined) => {
    if (value !== undefined && value !== '') bio[field] = value;
  };
  const nameWords = name?.split(/\s+/).filter(Boolean) ?? [];
  set('first name', nameWords[0]);
  set('last name', nameWords.length >= 2 ? nameWords[nameWords.length - 1] : undefined);
  set('gender', gender);
  set('birth year', date?.match(/(?<!\d)\d{4}(?!\d)/)?.[0]);
  set('birth place', place);
  set('profession', profession);
  set('accomplishments', accomplishments);
  return bio;
}

/** One biography field's coverage, entropy and most frequent values (the paper's Table 2). */
export interface FieldMetrics {
  field: BiographyField;
  /** Samples in which the field was found. */
  present: number;
  /** Distinct values among them. */
  coverage: number;
  /** Entropy (nats) of the empirical distribution of the values found. */
  entropy: number;
  intervals: { coverage: Interval; entropy: Interval };
  /** The five most frequent values with their counts. */
  top: ValueCount[];
}

function biographyFieldMetrics(bios: Biography[], resamples: Uint32Array[]): FieldMetrics[] {
  return biographyFields.map((field) => {
    const column = new Column(bios.map((b) => b[field]));
    const coverage = column.coverage();
    const entropy = column.entropy();
    return {
      field,
      present: column.present(),
      coverage,
      entropy,
      intervals: {
        coverage: intervalOf(coverage, replicates(resamples, (w) => column.coverage(w)), { min: 0, max: bios.length }),
        entropy: intervalOf(entropy, replicates(resamples, (w) => column.entropy(w)), { min: 0 }),
      },
      top: column.top(5),
    };
  });
}

/** The biography prompt of the paper (Table 3) or one like it: its six field placeholders in order. */
export function isBiographyRequest(request: string): boolean {
  const placeholders = ['{First name and last name}', '{Gender', '{Date and year of birth}', '{City and country of birth}', '{Profession}'];
  let at = 0;
  for (const p of placeholders) {
    at = request.indexOf(p, at);
    if (at < 0) return false;
  }
  return true;
}
