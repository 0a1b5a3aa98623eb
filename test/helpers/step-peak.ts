/**
 * Child process for the memory-planning test: one training step on a random-init model, its
 * measured peak (the most anonymous resident memory sampled during the step less that before
 * it) beside the step's own plan (plannedBytes). Prints one JSON line.
 *
 *   node --import tsx test/helpers/step-peak.ts HIDDEN INTERMEDIATE LAYERS VOCAB PROMPTS LENGTH BUDGET
 *
 * PROMPTS causal prompts of LENGTH tokens each, every next token an edge; BUDGET >= 0 sets the
 * activation budget (0: every layer recomputed), < 0 leaves the default.
 */
import { readFileSync } from 'node:fs';

import { initTensorSources } from '../../lib/model/presets.js';
import { native, type EngineConfig } from '../../lib/native.js';
import { chainBatch } from './tiny-model.js';

const [hidden, intermediate, layers, vocab, prompts, length, budget] = process.argv.slice(2).map(Number);
const config: EngineConfig = {
  hiddenSize: hidden,
  intermediateSize: intermediate,
  numLayers: layers,
  numHeads: 8,
  numKvHeads: 2,
  headDim: hidden / 8,
  vocabSize: vocab,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: { type: 'none' },
  tieWordEmbeddings: false,
  attentionBias: false,
};
const model = await native().createModel({ config, tensors: initTensorSources(config), device: 'cpu', threads: 2 });
if (budget >= 0) model.setActivationBudget(budget);
const modules = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const adapter = await model.createAdapter({ rank: 4, alpha: 8, targetModules: modules, seed: 1 });
const batch = chainBatch(vocab, prompts, length);
// Anonymous resident memory (what allocations hold; file-backed pages such as the node binary
// can be dropped and faulted back under memory pressure, so they would blur the figure),
// sampled every 2 ms while the step runs on its worker thread.
const anon = () => Number(/RssAnon:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;
const before = anon();
let peak = before;
const timer = setInterval(() => (peak = Math.max(peak, anon())), 2);
const result = await model.step(batch, adapter, { kind: 'ce' });
clearInterval(timer);
peak = Math.max(peak, anon());
process.stdout.write(`${JSON.stringify({ rows: batch.tokens.length, measured: peak - before, planned: result.plannedBytes, recomputed: result.recomputedLayers })}\n`);
adapter.dispose();
model.dispose();
