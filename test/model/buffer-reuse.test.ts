/**
 * The CPU backend keeps freed activation blocks for the next request of the same size: a
 * repeated step reuses the first step's memory instead of faulting in fresh pages. The reused
 * blocks hold the last step's values, so a repeated step must still give bit-identical results.
 */
import { initTensorSources } from '../../lib/model/presets.js';
import { native } from '../../lib/native.js';
import { tinyConfig } from '../helpers/tiny-model.js';

describe('activation buffers reused across steps', () => {
  it('a repeated step faults in far fewer pages and gives the same bits', async () => {
    const config = tinyConfig({ hidden: 64, heads: 4, kvHeads: 2, intermediate: 12800, vocab: 97, layers: 1 });
    const model = await native().createModel({ config, tensors: initTensorSources(config, { seed: 4, std: 0.1 }), device: 'cpu', threads: 2 });
    // One 700-token chain: the MLP's activations are 700 x 12800 floats (34 MiB), above the
    // size malloc always maps fresh (and returns to the system when freed).
    const T = 700;
    const tokens = Int32Array.from({ length: T }, (_, i) => (i * 37 + 5) % 97);
    const parents = Int32Array.from({ length: T }, (_, i) => i - 1);
    const edgeRows = Int32Array.from({ length: 40 }, (_, i) => T - 41 + i);
    const batch = { tokens, parents, edgeRows, edgeTokens: Int32Array.from(edgeRows, (r) => tokens[r + 1]), edgeWeights: new Float32Array(40).fill(0.025) };
    const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed: 7 });
    const runs: { faults: number; bytes: Buffer }[] = [];
    for (let i = 0; i < 3; i++) {
      await adapter.zeroGrad();
      const before = process.resourceUsage().minorPageFault;
      const out = await model.step(batch, adapter, { kind: 'ce' });
      const faults = process.resourceUsage().minorPageFault - before;
      const parts = [Buffer.from(Float64Array.of(out.loss).buffer), Buffer.from(out.edgeLogProbs.buffer)];
      for (const t of adapter.describe().tensors) parts.push(Buffer.from((await adapter.getTensor(t.name, 'grad')).buffer));
      runs.push({ faults, bytes: Buffer.concat(parts) });
    }
    expect(runs[1].bytes.equals(runs[0].bytes)).toBe(true);
    expect(runs[2].bytes.equals(runs[0].bytes)).toBe(true);
    // The first step maps its activations (thousands of pages); the repeats reuse them.
    expect(runs[0].faults).toBeGreaterThan(1000);
    expect(runs[2].faults).toBeLessThan(runs[0].faults / 4);
    adapter.dispose();
    model.dispose();
  });
});
