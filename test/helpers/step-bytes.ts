/**
 * Child process for the thread-pool test: three training steps of a tiny random model on 2 CPU
 * threads; prints the SHA-256 of every step's loss, edge log-probs and LoRA gradients. The
 * pool's waiting policy comes from the environment (DIFFUSE_SPIN_US), so runs under different
 * policies must print the same digest.
 *
 *   node --import tsx test/helpers/step-bytes.ts
 */
import { createHash } from 'node:crypto';

import { initTensorSources } from '../../lib/model/presets.js';
import { native } from '../../lib/native.js';
import { chainBatch, tinyConfig } from './tiny-model.js';

const config = tinyConfig({ hidden: 64, heads: 4, kvHeads: 2, intermediate: 192, vocab: 97, layers: 2 });
const model = await native().createModel({ config, tensors: initTensorSources(config, { seed: 3, std: 0.1 }), device: 'cpu', threads: 2 });
const adapter = await model.createAdapter({ rank: 2, alpha: 4, targetModules: ['q_proj', 'v_proj', 'down_proj'], seed: 5 });
const hash = createHash('sha256');
for (let i = 0; i < 3; i++) {
  await adapter.zeroGrad();
  const out = await model.step(chainBatch(97, 4, 40 + 10 * i), adapter, { kind: 'ce' });
  hash.update(Buffer.from(Float64Array.of(out.loss).buffer)).update(Buffer.from(out.edgeLogProbs.buffer));
  for (const t of adapter.describe().tensors) hash.update(Buffer.from((await adapter.getTensor(t.name, 'grad')).buffer));
}
process.stdout.write(hash.digest('hex'));
adapter.dispose();
model.dispose();
