/**
 * A float64 reference of the whole decoder forward pass over a forest of rows, written plainly
 * from the definitions (no shared code with the engine): the yardstick for the engine's
 * log-probabilities and, through central finite differences, for its gradients. It follows
 * the config's family switches as transformers' Gemma / Gemma 2 / Gemma 3 / Qwen3 / Mistral
 * modeling files write them: embedding scale, GeGLU, q/k norms, sandwich norms, soft-caps, the
 * sliding window (key j seen from query i when i − w < j ≤ i, by position) and local RoPE bases.
 * Norm weights are taken as stored plus normWeightOffset.
 */
import type { EngineConfig, NativeBatch } from '../../lib/native.js';

export interface ReferenceWeights {
  config: EngineConfig;
  /** Hugging Face names → row-major values (any numeric array). */
  tensor(name: string): ArrayLike<number>;
}

/** LoRA matrices per "layers.{i}.{module}" key: A [r x in], B [out x r], scale α/r. */
export interface ReferenceLora {
  scale: number;
  A: Map<string, Float64Array>;
  B: Map<string, Float64Array>;
}

const moduleNames = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

/** Frequencies of the rotary dims; `long` picks LongRoPE's long factors. */
export function ropeInvFreq(c: EngineConfig, local = false, long = false): number[] {
  const dim = c.rotaryDim ?? c.headDim;
  const half = dim / 2;
  const out: number[] = [];
  const theta = local && c.localRopeTheta ? c.localRopeTheta : c.ropeTheta;
  for (let i = 0; i < half; i++) {
    let f = 1 / Math.pow(theta, (2 * i) / dim);
    const s = local && c.localRopeTheta ? undefined : c.ropeScaling;
    if (s?.type === 'linear') f /= s.factor ?? 1;
    if (s?.type === 'longrope') f /= (long ? s.longFactor : s.shortFactor)![i];
    if (s?.type === 'llama3') {
      const factor = s.factor ?? 1, low = s.lowFreqFactor ?? 1, high = s.highFreqFactor ?? 4, old = s.originalMaxPositionEmbeddings ?? 8192;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > old / low) f /= factor;
      else if (wavelen >= old / high) {
        const smooth = (old / wavelen - low) / (high - low);
        f = (1 - smooth) * (f / factor) + smooth * f;
      }
    }
    out.push(f);
  }
  return out;
}

/** y[rows x out] = x[rows x in] · Wᵀ (+ bias) (+ s·(x Aᵀ) Bᵀ). */
function linear(x: Float64Array, rows: number, inF: number, outF: number, W: ArrayLike<number>, bias?: ArrayLike<number>, A?: Float64Array, B?: Float64Array, scale = 0): Float64Array {
  const y = new Float64Array(rows * outF);
  const r = A ? A.length / inF : 0;
  const u = new Float64Array(r);
  for (let i = 0; i < rows; i++) {
    const xi = i * inF;
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let j = 0; j < inF; j++) s += x[xi + j] * A![k * inF + j];
      u[k] = s;
    }
    for (let o = 0; o < outF; o++) {
      let s = bias ? bias[o] : 0;
      const wo = o * inF;
      for (let j = 0; j < inF; j++) s += x[xi + j] * W[wo + j];
      for (let k = 0; k < r; k++) s += scale * u[k] * B![o * r + k];
      y[i * outF + o] = s;
    }
  }
  return y;
}

function rmsnorm(x: Float64Array, rows: number, d: number, w: ArrayLike<number>, eps: number, offset = 0): Float64Array {
  const y = new Float64Array(rows * d);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let j = 0; j < d; j++) ss += x[i * d + j] ** 2;
    const s = 1 / Math.sqrt(ss / d + eps);
    for (let j = 0; j < d; j++) y[i * d + j] = x[i * d + j] * s * (w[j] + offset);
  }
  return y;
}

const softcap = (x: number, cap: number | undefined) => (cap ? cap * Math.tanh(x / cap) : x);
const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

/** Rotates the first 2·inv.length dims of each head (the rest pass through) by row i's frequencies inv(i), cos and sin times `scale`. */
function rope(x: Float64Array, rows: number, heads: number, hd: number, pos: number[], invOf: (row: number) => number[], scale: number): void {
  for (let i = 0; i < rows; i++) {
    const inv = invOf(i);
    const half = inv.length;
    for (let h = 0; h < heads; h++) {
      const base = (i * heads + h) * hd;
      for (let j = 0; j < half; j++) {
        const t = pos[i] * inv[j];
        const a = x[base + j], b = x[base + j + half];
        x[base + j] = scale * (a * Math.cos(t) - b * Math.sin(t));
        x[base + j + half] = scale * (a * Math.sin(t) + b * Math.cos(t));
      }
    }
  }
}

/** Log-probabilities of the batch's edges under the model (and LoRA, when given), in float64. */
export function referenceEdgeLogProbs(m: ReferenceWeights, batch: NativeBatch, lora?: ReferenceLora): Float64Array {
  const c = m.config;
  const T = batch.tokens.length, d = c.hiddenSize, hd = c.headDim;
  const qd = c.numHeads * hd, kvd = c.numKvHeads * hd, I = c.intermediateSize;
  const depth: number[] = [];
  const ancestors: number[][] = [];
  for (let r = 0; r < T; r++) {
    const p = batch.parents[r];
    depth.push(p < 0 ? 0 : depth[p] + 1);
    ancestors.push(p < 0 ? [r] : [...ancestors[p], r]);
  }
  // LongRoPE: per tree of the forest, the long factors when its largest position (its edges'
  // tokens included) + 1 passes the original context.
  const s = c.ropeScaling;
  const longrope = s?.type === 'longrope';
  const root = ancestors.map((a) => a[0]);
  const deepest = new Map<number, number>();
  for (let r = 0; r < T; r++) deepest.set(root[r], Math.max(deepest.get(root[r]) ?? 0, depth[r]));
  batch.edgeRows.forEach((r) => deepest.set(root[r], Math.max(deepest.get(root[r])!, depth[r] + 1)));
  const shortInv = ropeInvFreq(c, false, false);
  const longInv = ropeInvFreq(c, false, true);
  const globalInv = (r: number) => (longrope && deepest.get(root[r])! + 1 > s.originalMaxPositionEmbeddings! ? longInv : shortInv);
  const localInv = ropeInvFreq(c, true);
  const globalScale = longrope ? (s.attentionFactor ?? 1) : 1;
  const off = c.normWeightOffset ?? 0;
  const eps = c.rmsNormEps;
  const scaleEmb = c.embeddingScale ?? 1;
  const E = m.tensor('model.embed_tokens.weight');
  let x: Float64Array = new Float64Array(T * d);
  for (let r = 0; r < T; r++) for (let j = 0; j < d; j++) x[r * d + j] = E[batch.tokens[r] * d + j] * scaleEmb;

  const lin = (layer: number, mod: (typeof moduleNames)[number], input: Float64Array, inF: number, outF: number) => {
    const path = `model.layers.${layer}.${mod.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(mod) ? 'mlp' : 'self_attn'}.${mod}`;
    const key = `layers.${layer}.${mod}`;
    const bias = c.attentionBias && ['q_proj', 'k_proj', 'v_proj'].includes(mod) ? m.tensor(`${path}.bias`) : undefined;
    return linear(input, T, inF, outF, m.tensor(`${path}.weight`), bias, lora?.A.get(key), lora?.B.get(key), lora?.scale ?? 0);
  };

  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const sliding = !!c.slidingWindow && (!c.layerTypes || c.layerTypes[l] === 'sliding_attention');
    const local = sliding && !!c.localRopeTheta;
    const inv = local ? () => localInv : globalInv;
    const ropeScale = local ? 1 : globalScale;
    const xn = rmsnorm(x, T, d, m.tensor(p + 'input_layernorm.weight'), eps, off);
    let q = lin(l, 'q_proj', xn, d, qd);
    let k = lin(l, 'k_proj', xn, d, kvd);
    const v = lin(l, 'v_proj', xn, d, kvd);
    if (c.qkNorm) {
      q = rmsnorm(q, T * c.numHeads, hd, m.tensor(p + 'self_attn.q_norm.weight'), eps, off);
      k = rmsnorm(k, T * c.numKvHeads, hd, m.tensor(p + 'self_attn.k_norm.weight'), eps, off);
    }
    rope(q, T, c.numHeads, hd, depth, inv, ropeScale);
    rope(k, T, c.numKvHeads, hd, depth, inv, ropeScale);
    const attnScale = c.attentionScale ?? 1 / Math.sqrt(hd);
    const attn = new Float64Array(T * qd);
    const group = c.numHeads / c.numKvHeads;
    for (let i = 0; i < T; i++)
      for (let h = 0; h < c.numHeads; h++) {
        const kvh = Math.floor(h / group);
        const keys = sliding ? ancestors[i].filter((j) => depth[i] - c.slidingWindow! < depth[j]) : ancestors[i];
        const scores = keys.map((j) => {
          let s = 0;
          for (let t = 0; t < hd; t++) s += q[i * qd + h * hd + t] * k[j * kvd + kvh * hd + t];
          return softcap(s * attnScale, c.attnLogitSoftcap);
        });
        const mx = Math.max(...scores);
        const ex = scores.map((s) => Math.exp(s - mx));
        const sum = ex.reduce((a, b) => a + b, 0);
        keys.forEach((j, n) => {
          for (let t = 0; t < hd; t++) attn[i * qd + h * hd + t] += (ex[n] / sum) * v[j * kvd + kvh * hd + t];
        });
      }
    let o = lin(l, 'o_proj', attn, qd, d);
    if (c.sandwichNorms) o = rmsnorm(o, T, d, m.tensor(p + 'post_attention_layernorm.weight'), eps, off);
    for (let i = 0; i < x.length; i++) x[i] += o[i];
    const xn2 = rmsnorm(x, T, d, m.tensor(p + (c.sandwichNorms ? 'pre_feedforward_layernorm.weight' : 'post_attention_layernorm.weight')), eps, off);
    const g = lin(l, 'gate_proj', xn2, d, I);
    const u = lin(l, 'up_proj', xn2, d, I);
    const h = new Float64Array(T * I);
    for (let i = 0; i < h.length; i++) h[i] = (c.activation === 'gelu_tanh' ? geluTanh(g[i]) : g[i] / (1 + Math.exp(-g[i]))) * u[i];
    let down = lin(l, 'down_proj', h, I, d);
    if (c.sandwichNorms) down = rmsnorm(down, T, d, m.tensor(p + 'post_feedforward_layernorm.weight'), eps, off);
    for (let i = 0; i < x.length; i++) x[i] += down[i];
  }
  x = rmsnorm(x, T, d, m.tensor('model.norm.weight'), eps, off);
  const head = c.tieWordEmbeddings ? E : m.tensor('lm_head.weight');
  const out = new Float64Array(batch.edgeRows.length);
  const cache = new Map<number, { z: Float64Array; lse: number }>();
  for (let e = 0; e < out.length; e++) {
    const row = batch.edgeRows[e];
    let entry = cache.get(row);
    if (!entry) {
      const z = new Float64Array(c.vocabSize);
      for (let t = 0; t < c.vocabSize; t++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += x[row * d + j] * head[t * d + j];
        z[t] = softcap(s, c.finalLogitSoftcap);
      }
      const mx = Math.max(...z);
      let sum = 0;
      for (const zt of z) sum += Math.exp(zt - mx);
      entry = { z, lse: mx + Math.log(sum) };
      cache.set(row, entry);
    }
    out[e] = entry.z[batch.edgeTokens[e]] - entry.lse;
  }
  return out;
}

/** The training loss Σ_e w_e · (−log p_e) of a batch, in float64. */
export function referenceLoss(m: ReferenceWeights, batch: NativeBatch, lora?: ReferenceLora): number {
  const logp = referenceEdgeLogProbs(m, batch, lora);
  let loss = 0;
  for (let e = 0; e < logp.length; e++) loss -= batch.edgeWeights![e] * logp[e];
  return loss;
}

export { moduleNames };

/**
 * The full log-softmax over the vocabulary at each edge's row, in float64: out[e][v] =
 * log softmax(z_{edgeRows[e]})[v]. Differences of these are differences of logits
 * (z_v − z_y = out[e][v] − out[e][y]), all the objectives need.
 */
export function referenceRowLogProbs(m: ReferenceWeights, batch: NativeBatch, lora?: ReferenceLora): Float64Array[] {
  const V = m.config.vocabSize;
  const E = batch.edgeRows.length;
  const edgeRows = new Int32Array(E * V);
  const edgeTokens = new Int32Array(E * V);
  for (let e = 0; e < E; e++)
    for (let v = 0; v < V; v++) {
      edgeRows[e * V + v] = batch.edgeRows[e];
      edgeTokens[e * V + v] = v;
    }
  const all = referenceEdgeLogProbs(m, { ...batch, edgeRows, edgeTokens, edgeWeights: undefined }, lora);
  return Array.from({ length: E }, (_, e) => all.subarray(e * V, (e + 1) * V));
}
