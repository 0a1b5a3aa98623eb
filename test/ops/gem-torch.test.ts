/**
 * The fused log-prob kernel's GEM (and cross-entropy) loss and gradient against the GEM authors'
 * formula run in PyTorch float64 autograd: the committed fixture test/fixtures/reference/gem-loss.json,
 * made by tools/reference/gem_reference.py (see its header for the formula and its source).
 * The fixture's edge weights are 1/N, so Σ_e W_e loss_e is the authors' mean over positions.
 */
import { readFileSync } from 'node:fs';

import { native, type ObjectiveKind } from '../../lib/native.js';
import { relErr } from '../reference/ops.js';

interface Fixture {
  made_by: string;
  problem: { rows: number; dim: number; vocab: number; hidden: number[]; head: number[]; parentRows: number[]; edgeParent: number[]; edgeToken: number[]; edgeWeight: number[] };
  cases: { objective: { kind: 'ce' } | { kind: 'gem'; beta: number; h: 'linear' | 'logsigmoid' }; edgeLoss: number[]; loss: number; dhidden: number[] }[];
}

const fixture = JSON.parse(readFileSync(new URL('../fixtures/reference/gem-loss.json', import.meta.url), 'utf8')) as Fixture;
const ops = native().ops('cpu');

describe('GEM and cross-entropy against the GEM authors\' formula in PyTorch (committed fixture)', () => {
  it('covers cross-entropy and GEM with both h and several β', () => {
    expect(fixture.made_by).toBe('tools/reference/gem_reference.py');
    expect(fixture.cases.map((c) => JSON.stringify(c.objective))).toEqual(expect.arrayContaining(['{"kind":"ce"}', '{"kind":"gem","beta":0.7,"h":"linear"}', '{"kind":"gem","beta":0.7,"h":"logsigmoid"}']));
  });

  for (const c of fixture.cases) {
    const o = c.objective;
    const name = o.kind === 'ce' ? 'cross-entropy' : `GEM h ${o.h}, β ${o.beta}`;
    it(`${name}: per-edge loss, the mean and dL/dhidden within 1e-5`, () => {
      const p = fixture.problem;
      const args = {
        hidden: Float32Array.from(p.hidden),
        head: Float32Array.from(p.head),
        vocab: p.vocab,
        dim: p.dim,
        parentRows: Int32Array.from(p.parentRows),
        edgeParent: Int32Array.from(p.edgeParent),
        edgeToken: Int32Array.from(p.edgeToken),
        edgeWeight: Float32Array.from(p.edgeWeight),
        objective: o.kind === 'ce' ? { kind: 'ce' as ObjectiveKind } : { kind: (o.h === 'linear' ? 'gem-linear' : 'gem-logsigmoid') as ObjectiveKind, beta: o.beta },
      };
      const forward = ops.logprobsForward(args);
      const dhidden = ops.logprobsBackward({ ...args, parentStats: forward.parentStats, edgeStats: forward.edgeStats, dhidden: new Float32Array(p.rows * p.dim) });
      expect(relErr(forward.edgeLoss, c.edgeLoss)).toBeLessThan(1e-5);
      const loss = Array.from(forward.edgeLoss).reduce((s, l, e) => s + p.edgeWeight[e] * l, 0);
      expect(Math.abs(loss - c.loss) / c.loss).toBeLessThan(1e-5);
      expect(relErr(dhidden, c.dhidden)).toBeLessThan(1e-5);
    });
  }
});
