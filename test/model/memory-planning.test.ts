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
/** A limit `room` bytes above what this process holds now. */
function limitWithRoom(room: number): void {
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

  // The plan is derived from the shapes (each buffer as step() and the kernels size it), so it
  // must cover a step's real peak and not overshoot it by much: measured in a child process,
  // whose peak RSS is the step's alone.
  it.each([
    ['every layer kept', -1],
    ['every layer recomputed', 0],
  ])('the planned bytes of a step cover its measured peak within a margin (%s)', async (_, budget) => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', join('test', 'helpers', 'step-peak.ts'), '512', '1536', '3', '8192', '6', '250', String(budget)], {
      encoding: 'utf8',
    });
    const r = JSON.parse(out) as { rows: number; measured: number; raisedPeak: boolean; planned: number; recomputed: number };
    expect(r.rows).toBe(1500);
    expect(r.recomputed).toBe(budget === 0 ? 3 : 0);
    expect(r.raisedPeak).toBe(true);
    expect(r.measured).toBeGreaterThan(64 * MiB);
    expect(r.planned).toBeGreaterThanOrEqual(r.measured);
    expect(r.planned).toBeLessThan(1.5 * r.measured + 16 * MiB);
  });
});
