/**
 * Memory planning says no before the kernel's OOM killer does: with a limit injected through
 * setMemoryLimit (this process's resident set plus a little; DIFFUSE_MEMORY_LIMIT does the same
 * for the CLI), loading weights that would
 * not fit, or a step whose activations would not, is a typed OUT_OF_MEMORY error naming what
 * needed how much and what to try; a compact dtype makes the same model fit, and a model that
 * fits trains as before.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

import { fromNative, OutOfMemoryError } from '../../lib/errors.js';
import { initTensorSources } from '../../lib/model/presets.js';
import { native } from '../../lib/native.js';
import { chainBatch, tinyConfig } from '../helpers/tiny-model.js';

const MiB = 1 << 20;
/**
 * A limit `room` bytes above what this process holds now. The activation blocks kept for reuse
 * are freed first: planning counts them as available, so an earlier step (in this file or
 * another in the same jest worker) would otherwise add its activations to the room.
 */
function limitWithRoom(room: number): void {
  native().releaseKeptMemory();
  native().setMemoryLimit(process.memoryUsage().rss + room);
}


afterEach(() => {
  native().setMemoryLimit(0);
});

async function failure(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return fromNative(error);
  }
  throw new Error('expected an OUT_OF_MEMORY error');
}

describe('memory planning', () => {
  // 32768 x 512 embedding and head: 128 MiB in f32, 18 MiB in Q4_0.
  const config = tinyConfig({ hidden: 512, heads: 8, kvHeads: 2, intermediate: 512, vocab: 32768, layers: 1 });

  it('refuses to load weights that would not fit, naming the sizes and the compact dtypes', async () => {
    limitWithRoom(60 * MiB);
    const error = await failure(native().createModel({ config, tensors: initTensorSources(config), device: 'cpu', threads: 1 }));
    expect(error).toBeInstanceOf(OutOfMemoryError);
    expect(error.message).toMatch(/^loading the model's weights \(13\d\.\d MiB kept, 0\.0 MiB while loading\) needs 13\d\.\d MiB but \d+\.\d MiB is available \(the memory limit of \d+\.\d [MG]iB set for this process, less its/);
    expect(error.message).toMatch(/try weights in a compact type.*bf16: 6\d\.\d MiB, q8_0: 3\d\.\d MiB, q4_0: 1\d\.\d MiB/);
    // The same model stored as Q4_0 fits.
    const model = await native().createModel({ config, tensors: initTensorSources(config, { dtype: 'Q4_0' }), device: 'cpu', threads: 1 });
    expect(model.info().weightBytes).toBeLessThan(30 * MiB);
    model.dispose();
  });

  it('refuses a step whose activations would not fit, before allocating them; fits without the limit', async () => {
    const small = tinyConfig({ hidden: 256, heads: 4, intermediate: 768, vocab: 64, layers: 2 });
    const model = await native().createModel({ config: small, tensors: initTensorSources(small), device: 'cpu', threads: 1 });
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules: [], seed: 1 });
    const batch = chainBatch(small.vocabSize, 4, 500);
    limitWithRoom(8 * MiB);
    const error = await failure(model.step(batch, adapter, { kind: 'ce' }));
    expect(error).toBeInstanceOf(OutOfMemoryError);
    expect(error.message).toMatch(
      /^a training step over 2000 rows needs at least \d+\.\d MiB \(.* of activations per layer, recomputed; .* of layer inputs; .* of gradients and outputs; .* of kernel scratch\) but \d+\.\d MiB is available .*try fewer rows per step/,
    );
    native().setMemoryLimit(0);
    const result = await model.step(batch, adapter, { kind: 'ce' });
    expect(Number.isFinite(result.loss)).toBe(true);
    expect(result.plannedBytes).toBeGreaterThan(8 * MiB);
    adapter.dispose();
    model.dispose();
  });

  it('refuses an eval forward whose activations would not fit, naming the rows and what to try', async () => {
    const small = tinyConfig({ hidden: 256, heads: 4, intermediate: 768, vocab: 64, layers: 2 });
    const model = await native().createModel({ config: small, tensors: initTensorSources(small), device: 'cpu', threads: 1 });
    const batch = chainBatch(small.vocabSize, 4, 500);
    limitWithRoom(8 * MiB);
    const error = await failure(model.forward(batch));
    expect(error).toBeInstanceOf(OutOfMemoryError);
    expect(error.message).toMatch(
      /^evaluating 2000 rows \(1996 parent positions, 1996 target tokens; \d+\.\d MiB of layer activations, .* of outputs, .* of kernel scratch\) needs \d+\.\d MiB but .* is available .*; try fewer prompts or targets per call \(a smaller batch\)/,
    );
    // One prompt of 20 000 tokens: its key lists alone (each row lists its ancestors) are 1.5 GiB.
    const keys = await failure(model.forward(chainBatch(small.vocabSize, 1, 20_000)));
    expect(keys.message).toMatch(/^the attention key lists of 20000 rows \(each lists its ancestors: 1\.5 GiB\) needs .*; try shorter prompts/);
    native().setMemoryLimit(0);
    expect((await model.forward(batch)).edgeLogProbs.every(Number.isFinite)).toBe(true);
    model.dispose();
  });

  it('refuses a sampling session whose cache, append or draw would not fit', async () => {
    const wide = tinyConfig({ hidden: 256, heads: 4, intermediate: 256, vocab: 32768, layers: 2 });
    const model = await native().createModel({ config: wide, tensors: initTensorSources(wide, { dtype: 'Q8_0' }), device: 'cpu', threads: 1 });
    limitWithRoom(16 * MiB);
    // 2 layers x 2 x 200k rows x 128 keys and values + 200k x 256 hidden, in f32: 586 MiB.
    const cache = await failure(model.createSession({ capacity: 200_000 }));
    expect(cache).toBeInstanceOf(OutOfMemoryError);
    expect(cache.message).toMatch(/^a sampling session's cache of 200000 rows \(keys and values of 2 layers and the final hidden states, 58\d\.\d MiB\) needs .* but .* is available .*; try fewer samples per call, shorter prompts or a lower max tokens/);
    const session = await model.createSession({ capacity: 16 });
    const rows = 20_000;
    // A chain of 20 000 rows lists 2 x 10^8 keys (1.5 GiB) before any activation.
    const chain = await failure(session.append(new Int32Array(rows).fill(1), Int32Array.from({ length: rows }, (_, i) => i - 1)));
    expect(chain).toBeInstanceOf(OutOfMemoryError);
    expect(chain.message).toMatch(/^the attention key lists of 20000 rows \(each lists its ancestors: 1\.5 GiB\) needs .*; try shorter prompts or fewer rows per call/);
    // As many one-row prompts: few keys, but 20 000 rows of activations and a cache to grow.
    const append = await failure(session.append(new Int32Array(rows).fill(1), new Int32Array(rows).fill(-1)));
    expect(append).toBeInstanceOf(OutOfMemoryError);
    expect(append.message).toMatch(
      /^appending 20000 rows to a sampling session of 0 rows \(1\d\d\.\d MiB of activations, .* of kernel scratch, 5\d\.\d MiB for its cache to grow\) needs .*; try fewer samples per call, shorter prompts/,
    );
    native().setMemoryLimit(0);
    await session.append(Int32Array.of(1, 2, 3), Int32Array.of(-1, 0, 1));
    limitWithRoom(4 * MiB);
    const many = 256;
    const draw = await failure(session.sample(new Int32Array(many).fill(2), Uint32Array.from({ length: many }, (_, i) => i), { temperature: 1, topK: 0, topP: 1, seed: 1, step: 0 }));
    expect(draw).toBeInstanceOf(OutOfMemoryError);
    expect(draw.message).toMatch(/^drawing 256 next tokens over a vocabulary of 32768 \(.* of logits and scratch\) needs .*; try fewer samples per call/);
    native().setMemoryLimit(0);
    expect((await session.sample(Int32Array.of(2), Uint32Array.of(0), { temperature: 1, topK: 0, topP: 1, seed: 1, step: 0 })).tokens.length).toBe(1);
    expect(session.rows()).toBe(3);
    session.dispose();
    model.dispose();
  });

  // The plan is derived from the shapes (each buffer as step() and the kernels size it), so it
  // must cover a step's real peak and not overshoot it by much: measured in a child process
  // (test/helpers/step-peak.ts), whose memory is the step's alone.
  it.each([
    ['every layer kept', 1 << 30],
    ['every layer recomputed', 0],
  ])('the planned bytes of a step cover its measured peak within a margin (%s)', async (_, budget) => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', join('test', 'helpers', 'step-peak.ts'), '512', '1536', '3', '8192', '6', '250', String(budget)], {
      encoding: 'utf8',
    });
    const r = JSON.parse(out) as { rows: number; measured: number; planned: number; recomputed: number };
    // One object, so that a failure shows every figure.
    expect({ ...r, covers: r.planned >= r.measured, within: r.planned < 1.5 * r.measured + 16 * MiB, large: r.measured > 64 * MiB }).toEqual({
      ...r,
      rows: 1500,
      recomputed: budget === 0 ? 3 : 0,
      covers: true,
      within: true,
      large: true,
    });
  });
});
