/**
 * Memory planning says no before the kernel's OOM killer does: with a limit injected through
 * setMemoryLimit (this process's resident set plus a little; DIFFUSE_MEMORY_LIMIT does the same
 * for the CLI), loading weights that would
 * not fit, or a step whose activations would not, is a typed OUT_OF_MEMORY error naming what
 * needed how much and what to try; a compact dtype makes the same model fit, and a model that
 * fits trains as before.
 */
import { fromNative, OutOfMemoryError } from '../../lib/errors.js';
import { initTensorSources } from '../../lib/model/presets.js';
import { native } from '../../lib/native.js';
import { tinyBatch, tinyConfig } from '../helpers/tiny-model.js';

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
    const small = tinyConfig({ hidden: 64, intermediate: 96, vocab: 40, layers: 2 });
    const model = await native().createModel({ config: small, tensors: initTensorSources(small), device: 'cpu', threads: 1 });
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules: [], seed: 1 });
    const batch = tinyBatch(small.vocabSize);
    const weighted = { ...batch, edgeWeights: new Float32Array(batch.edgeRows.length).fill(0.5) };
    limitWithRoom(64 * MiB);
    const error = await failure(model.step(weighted, adapter, { kind: 'ce' }));
    expect(error).toBeInstanceOf(OutOfMemoryError);
    expect(error.message).toMatch(/^a training step over 16 rows needs at least 2\d\d\.\d MiB \(.* of activations per layer, recomputed; .* of gradients and scratch\) but \d+\.\d MiB is available .*try fewer rows per step/);
    native().setMemoryLimit(0);
    expect(Number.isFinite((await model.step(weighted, adapter, { kind: 'ce' })).loss)).toBe(true);
    adapter.dispose();
    model.dispose();
  });
});
