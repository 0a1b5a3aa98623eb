/**
 * Child process for the memory-planning test: one training step on a random-init model, its
 * measured peak (getrusage's maxrss after the step less the resident set before it) beside
 * the step's own plan (plannedBytes), and whether the step raised the process's peak at all
 * (if loading had peaked higher, the step's peak would not show). Prints one JSON line.
 *
 *   node --import tsx test/helpers/step-peak.ts HIDDEN INTERMEDIATE LAYERS VOCAB PROMPTS LENGTH BUDGET
 *
 * PROMPTS causal prompts of LENGTH tokens each, every next token an edge; BUDGET >= 0 sets the
 * activation budget (0: every layer recomputed), < 0 leaves the default.
 */
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
const before = process.memoryUsage().rss, peakBefore = process.resourceUsage().maxRSS * 1024;
const result = await model.step(batch, adapter, { kind: 'ce' });
const peak = process.resourceUsage().maxRSS * 1024;
process.stdout.write(`${JSON.stringify({ rows: batch.tokens.length, measured: peak - before, raisedPeak: peak > peakBefore, planned: result.plannedBytes, recomputed: result.recomputedLayers })}\n`);
adapter.dispose();
model.dispose();
