/**
 * The metrics on texts whose answers, counts and words are known by construction, the
 * bootstrap against the normal approximation it should reproduce, and the biography fields.
 */
import { readFileSync } from 'node:fs';

import {
  answerGroups,
  expectedCoverage,
  isBiographyRequest,
  parseAnswer,
  parseBiography,
  sampledMetrics,
  unigramDiversity,
  words,
} from '../../lib/eval/metrics.js';
import { entropyOfCounts, intervalOf } from '../../lib/eval/stats.js';
import { rngRequests } from '../../lib/tasks/index.js';

const repeat = <T>(items: [T, number][]): T[] => items.flatMap(([item, n]) => new Array<T>(n).fill(item));

describe('answers', () => {
  it('are the first {…} group, trimmed inside its braces', () => {
    expect(parseAnswer('{5}')).toBe('{5}');
    expect(parseAnswer('Sure! Here it is: { 7 } and {8}')).toBe('{7}');
    expect(parseAnswer('I pick seven.')).toBeUndefined();
    expect(parseAnswer('{unclosed')).toBeUndefined();
    expect(parseAnswer('{a {b} c}')).toBe('{b}');
  });

  it('keep as many groups as the targets have, one per line', () => {
    const target = '{Fatema Rahman}\n{Female}\n{February 20, 1934}\n{Rajshahi, Bangladesh}';
    expect(answerGroups([target])).toBe(4);
    expect(parseAnswer(`${target.replace('\n', ' \n ')}\n{Writer}\n{Wrote books}`, 4)).toBe(target);
    expect(parseAnswer('{Fatema Rahman}\n{Female}', 4)).toBeUndefined();
    expect(answerGroups([])).toBe(1);
    expect(answerGroups(['red', 'green'])).toBe(0);
    expect(parseAnswer('  red \n', 0)).toBe('red');
  });
});

describe('sampled metrics', () => {
  const targets = ['{1}', '{2}', '{3}', '{4}'];
  // 6 × {1}, 2 × {2}, 1 × {9} (parsed, outside the set), 1 without an answer.
  const texts = [...repeat<string>([['{1}', 5], ['I choose {1}.', 1], ['{ 2 }', 2]]), 'My pick: {9}', 'no braces here'];

  it('count answers, coverage, valid and parsed rates, and the entropy of the parsed answers', () => {
    const m = sampledMetrics(texts, { targets, resamples: 200 });
    expect(m.n).toBe(10);
    expect(m.parsedRate).toBeCloseTo(0.9, 12);
    expect(m.validRate).toBeCloseTo(0.8, 12);
    expect(m.coverage).toBe(3);
    expect(m.targetCoverage).toBe(2);
    expect(m.answers).toEqual([
      { value: '{1}', count: 6, valid: true },
      { value: '{2}', count: 2, valid: true },
      { value: '{9}', count: 1, valid: false },
    ]);
    const p = [6 / 9, 2 / 9, 1 / 9];
    expect(m.entropy).toBeCloseTo(-p.reduce((s, x) => s + x * Math.log(x), 0), 12);
    for (const [name, [low, high]] of Object.entries(m.intervals)) {
      const value = m[name as keyof typeof m.intervals];
      expect(low).toBeLessThanOrEqual(value + 1e-12);
      expect(high).toBeGreaterThanOrEqual(value - 1e-12);
    }
  });

  it('count every parsed answer as valid when the task has no target set', () => {
    const m = sampledMetrics(texts, { resamples: 0 });
    expect(m.validRate).toBeCloseTo(0.9, 12);
    expect(m.targetCoverage).toBeUndefined();
    expect(m.intervals.coverage).toEqual([3, 3]);
  });

  it('entropy of counts is −Σ p log p', () => {
    expect(entropyOfCounts([2, 1, 1])).toBeCloseTo(-(0.5 * Math.log(0.5) + 0.5 * Math.log(0.25)), 14);
    expect(entropyOfCounts([7])).toBe(0);
    expect(entropyOfCounts(new Array(10).fill(3))).toBeCloseTo(Math.log(10), 14);
  });

  it('unigram diversity is distinct words over words, over all texts together', () => {
    expect(words("The cat's 2 hats, THE end")).toEqual(['the', "cat's", '2', 'hats', 'the', 'end']);
    expect(unigramDiversity(['the cat', 'the dog'])).toBeCloseTo(3 / 4, 14);
    expect(unigramDiversity(['a b c', 'a b c', 'a b c'])).toBeCloseTo(3 / 9, 14);
    expect(unigramDiversity(['', '!!'])).toBe(0);
  });
});

describe('bootstrap intervals', () => {
  it('match the normal approximation for a rate, and are reproducible by seed', () => {
    // 400 samples, half valid: the 95% interval is about ±1.96·√(0.25/400) = ±0.049.
    const texts = repeat<string>([['{1}', 200], ['none', 200]]);
    const m = sampledMetrics(texts, { targets: ['{1}', '{2}'], resamples: 1000, seed: 1 });
    const [low, high] = m.intervals.validRate;
    expect(high - low).toBeGreaterThan(0.08);
    expect(high - low).toBeLessThan(0.12);
    expect((low + high) / 2).toBeCloseTo(0.5, 2);
    expect(sampledMetrics(texts, { targets: ['{1}', '{2}'], resamples: 1000, seed: 1 }).intervals).toEqual(m.intervals);
    expect(sampledMetrics(texts, { targets: ['{1}', '{2}'], resamples: 1000, seed: 2 }).intervals.validRate).not.toEqual(m.intervals.validRate);
  });

  it('are re-centred on the estimate and clipped to the possible range', () => {
    expect(intervalOf(10, [7, 8, 8, 9, 9, 9, 10, 10, 11], { min: 0, max: 10.5 })).toEqual([10 - 9 + 7.2, 10.5]);
    // Coverage of many rare answers: resamples see fewer distinct ones, yet the interval holds the estimate.
    const texts = Array.from({ length: 300 }, (_, i) => `{name${i % 200}}`);
    const m = sampledMetrics(texts, { resamples: 500 });
    expect(m.coverage).toBe(200);
    expect(m.intervals.coverage[0]).toBeLessThan(200);
    expect(m.intervals.coverage[1]).toBeGreaterThan(200);
  });
});

describe('exact expected coverage', () => {
  it('is Σ 1 − (1 − p)^N', () => {
    expect(expectedCoverage([0.5, 0.5], 1)).toBeCloseTo(1, 14);
    expect(expectedCoverage([0.5, 0.5], 2)).toBeCloseTo(1.5, 14);
    expect(expectedCoverage([0.2, 0.3, 0.1], 1000)).toBeCloseTo(3, 12);
    expect(expectedCoverage([1e-12], 1000)).toBeCloseTo(1e-9, 18);
  });
});

describe('biographies', () => {
  const request = (JSON.parse(readFileSync(new URL('../../data/tasks/reference/prompts/ficticious-people/ficticious-people.json', import.meta.url), 'utf8')) as {
    request: string;
  }).request;
  const bio = (name: string, gender: string, date: string, place: string, job: string) =>
    `{${name}}\n{${gender}}\n{${date}}\n{${place}}\n{${job}}\n{Discovered things in ${place}.}`;

  it('are recognised by the paper’s prompt', () => {
    expect(isBiographyRequest(request)).toBe(true);
    expect(isBiographyRequest(rngRequests(1, 10)[0])).toBe(false);
  });

  it('split into the paper’s categorical fields', () => {
    expect(parseBiography(bio('Juan Carlos Castro', 'Male', 'May 8, 1945', 'Puntarenas, Costa Rica', 'Poet'))).toEqual({
      'first name': 'Juan',
      'last name': 'Castro',
      gender: 'Male',
      'birth year': '1945',
      'birth place': 'Puntarenas, Costa Rica',
      profession: 'Poet',
      accomplishments: 'Discovered things in Puntarenas, Costa Rica.',
    });
    expect(parseBiography('{Plato}\n{Male}\n{428 BC}')).toEqual({ 'first name': 'Plato', gender: 'Male' });
    const partial = sampledMetrics(['{Ann Lee}\n{Female}'], { biography: true, resamples: 0 });
    expect(partial.completeBiographies).toBe(0);
    expect(partial.accomplishmentDiversity).toBeUndefined();
  });

  it('give per-field coverage, entropy and the top five values with counts (Table 2)', () => {
    const texts = [
      ...repeat<string>([[bio('Evelyn Hart', 'Female', 'June 1, 1985', 'Paris, France', 'Physicist'), 5]]),
      ...repeat<string>([[bio('Evelyn Stone', 'Female', 'March 3, 1985', 'Rome, Italy', 'Painter'), 3]]),
      bio('Amara Okafor', 'Female', 'July 9, 1950', 'Lagos, Nigeria', 'Engineer'),
      'I cannot write that.',
    ];
    const m = sampledMetrics(texts, { biography: true, resamples: 100 });
    const field = (name: string) => m.fields!.find((f) => f.field === name)!;
    expect(m.fields!.map((f) => f.field)).toEqual(['first name', 'last name', 'gender', 'birth year', 'birth place', 'profession']);
    expect(field('first name')).toMatchObject({ present: 9, coverage: 2, top: [{ value: 'Evelyn', count: 8 }, { value: 'Amara', count: 1 }] });
    expect(field('gender')).toMatchObject({ present: 9, coverage: 1, entropy: 0 });
    expect(field('birth year').top).toEqual([{ value: '1985', count: 8 }, { value: '1950', count: 1 }]);
    expect(field('last name').entropy).toBeCloseTo(entropyOfCounts([5, 3, 1]), 12);
    expect(field('profession').coverage).toBe(3);
    expect(m.completeBiographies).toBeCloseTo(0.9, 12);
    expect(m.accomplishmentDiversity).toBeCloseTo(unigramDiversity(texts.slice(0, 9).map((t) => parseBiography(t).accomplishments!)), 14);
  });
});
