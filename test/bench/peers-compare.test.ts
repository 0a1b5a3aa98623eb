import { compareLogProbs, compareLossCurves, compareTokens, logMeanExp, spread } from '../../bench/peers/compare.js';

describe('peer benchmark summaries', () => {
  test('spread gives the median (middle pair averaged) and the range', () => {
    expect(spread([3, 1, 2])).toEqual({ median: 2, min: 1, max: 3, n: 3 });
    expect(spread([4, 1, 3, 2])).toEqual({ median: 2.5, min: 1, max: 4, n: 4 });
    expect(() => spread([])).toThrow(RangeError);
  });

  test('logMeanExp averages probabilities, not log-probabilities', () => {
    expect(logMeanExp([Math.log(0.2), Math.log(0.4)])).toBeCloseTo(Math.log(0.3), 12);
    expect(logMeanExp([-1000, -1000])).toBeCloseTo(-1000, 9);
  });
});

describe('peer agreement checks', () => {
  const theirs = [
    { name: '{1}', logprob: -12.1 },
    { name: '{2}', logprob: -10.5 },
  ];

  test('log-probs pass within the tolerance and name the worst target when they do not', () => {
    const close = compareLogProbs('lp', [{ name: '{2}', logprob: -10.5005 }, { name: '{1}', logprob: -12.1001 }], theirs, 2e-3);
    expect(close.passed).toBe(true);
    expect(close.worst).toBeCloseTo(5e-4, 9);
    const far = compareLogProbs('lp', [{ name: '{1}', logprob: -12.1 }, { name: '{2}', logprob: -10.49 }], theirs, 2e-3);
    expect(far.passed).toBe(false);
    expect(far.detail).toContain('"{2}"');
  });

  test('a relative tolerance scales with the size of the log-prob', () => {
    const ours = [{ name: '{1}', logprob: -12.2 }, { name: '{2}', logprob: -10.5 }];
    expect(compareLogProbs('lp', ours, theirs, 2e-3).passed).toBe(false);
    expect(compareLogProbs('lp', ours, theirs, 2e-3, 1e-2).passed).toBe(true);
  });

  test('different target sets fail, whatever the numbers', () => {
    const r = compareLogProbs('lp', [{ name: '{1}', logprob: -12.1 }, { name: '{3}', logprob: -10.5 }], theirs, 1);
    expect(r.passed).toBe(false);
    expect(r.detail).toContain('{3}');
  });

  test('loss curves compare the first steps relatively and fail on a late gap only inside the window', () => {
    const ref = [10, 9, 8, 7];
    expect(compareLossCurves('loss', [10.05, 9, 8, 7], ref, 10, 0.01).passed).toBe(true);
    const bad = compareLossCurves('loss', [10, 9, 8.2, 7], ref, 10, 0.01);
    expect(bad.passed).toBe(false);
    expect(bad.detail).toContain('step 3');
    expect(compareLossCurves('loss', [10, 9, 8, 9], ref, 3, 0.01).passed).toBe(true);
    expect(compareLossCurves('loss', [10, 9], ref, 10, 0.01).passed).toBe(false);
    expect(compareLossCurves('loss', [10, NaN, 8, 7], ref, 10, 0.01).passed).toBe(false);
  });

  test('token ids must match exactly', () => {
    const a = { prompt: [1, 2, 3], targets: [{ name: '{1}', tokens: [5, 6] }] };
    expect(compareTokens('tok', a, a).passed).toBe(true);
    const b = { prompt: [1, 2, 3], targets: [{ name: '{1}', tokens: [5, 7] }] };
    const r = compareTokens('tok', a, b);
    expect(r.passed).toBe(false);
    expect(r.detail).toContain('"{1}"');
  });
});
