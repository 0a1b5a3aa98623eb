/**
 * model.generate on a tiny chat model: the same samples as eval's sample() for a seed, any
 * subset of indices giving exactly those samples (what resuming relies on), stop strings, and
 * an AbortSignal stopping it between decode steps.
 */
import { sample } from '../../lib/eval/sample.js';
import type { GeneratedSample } from '../../lib/generate/generate.js';
import type { Model } from '../../lib/model/model.js';
import { loadTinyChatModel } from '../eval/tiny-chat-model.js';

let model: Model;
beforeAll(async () => {
  model = await loadTinyChatModel(5);
});
afterAll(() => model.dispose());

async function all(it: AsyncIterable<GeneratedSample>): Promise<GeneratedSample[]> {
  const out: GeneratedSample[] = [];
  for await (const s of it) out.push(s);
  return out.sort((a, b) => a.index - b.index);
}

const request = 'Name a fruit.';

describe('model.generate', () => {
  it('yields the samples eval draws for the same seed, each once, whatever the batch size', async () => {
    const settings = { temperature: 1, maxTokens: 8, seed: 11 };
    const expected = await sample(model, request, { ...settings, n: 10 });
    const got = await all(model.generate(request, { ...settings, n: 10, batchSize: 3 }));
    expect(got.map((s) => s.index)).toEqual([...Array(10).keys()]);
    expect(got.map((s) => s.text)).toEqual(expected.samples.map((s) => s.text));
    expect(got.map((s) => s.tokenIds)).toEqual(expected.samples.map((s) => s.tokens));
    expect(got.reduce((s, x) => s + x.tokens, 0)).toBe(expected.generatedTokens);
    expect(got.every((s) => s.seed === 11)).toBe(true);
    expect(new Set(got.map((s) => s.text)).size).toBeGreaterThan(1);
  });

  it('draws only the indices asked for, exactly as a full run draws them', async () => {
    const settings = { maxTokens: 6, seed: 4, n: 9 };
    const full = await all(model.generate(request, settings));
    const part = await all(model.generate(request, { ...settings, indices: [7, 2, 5], batchSize: 2 }));
    expect(part.map((s) => s.index)).toEqual([2, 5, 7]);
    expect(part.map((s) => s.text)).toEqual([full[2].text, full[5].text, full[7].text]);
    await expect(all(model.generate(request, { ...settings, indices: [-1] }))).rejects.toThrow(/below 2\^32/);
  });

  it('ends a sample before the first stop string', async () => {
    const settings = { maxTokens: 12, seed: 8, n: 6, temperature: 1 };
    const plain = await all(model.generate(request, settings));
    const long = plain.find((s) => s.text.length >= 6)!;
    const stop = long.text.slice(2, 4);
    const stopped = await all(model.generate(request, { ...settings, stop: [stop] }));
    for (const [i, s] of stopped.entries()) {
      const at = plain[i].text.indexOf(stop);
      if (at < 0) expect(s.text).toBe(plain[i].text);
      else {
        expect(s.finishReason).toBe('stop');
        expect(s.text).toBe(plain[i].text.slice(0, at));
      }
    }
    expect(stopped[long.index].text.length).toBeLessThan(long.text.length);
  });

  it('stops between decode steps when its signal aborts, keeping what finished', async () => {
    const abort = new AbortController();
    const seen: GeneratedSample[] = [];
    const run = (async () => {
      for await (const s of model.generate(request, { n: 40, maxTokens: 16, seed: 1, batchSize: 4, signal: abort.signal })) {
        seen.push(s);
        if (seen.length === 2) abort.abort(new Error('enough'));
      }
    })();
    await expect(run).rejects.toThrow('enough');
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(seen.length).toBeLessThan(40);
    await expect(all(model.generate(request, { n: 1, signal: AbortSignal.abort() }))).rejects.toThrow();
  });
});

describe('model.generate arguments', () => {
  it('refuses a sample count that is not a whole number ≥ 1', async () => {
    for (const n of [0, 1.5, Number.NaN]) await expect(all(model.generate(request, { n }))).rejects.toThrow(/number of samples must be an integer ≥ 1/);
  });
});
