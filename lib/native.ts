/**
 * The native addon: its loading and its typed surface. Everything here is internal; the
 * public API (lib/index.ts) wraps it in typed errors and friendlier shapes.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The decoder shape the engine needs (camelCase of the engine's ModelConfig). */
export interface EngineConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling?: {
    type: 'none' | 'linear' | 'llama3' | 'longrope';
    factor?: number;
    lowFreqFactor?: number;
    highFreqFactor?: number;
    originalMaxPositionEmbeddings?: number;
    /**
     * longrope (Phi-3): each frequency is divided by its short factor, or by its long factor
     * where the largest position + 1 exceeds originalMaxPositionEmbeddings: per segment (tree)
     * of a batch, its edges' tokens counted (Model.trieBatch splits straddling prompts), and
     * per tree of a sampling session, by its deepest row. rotaryDim / 2 values each.
     */
    shortFactor?: number[];
    longFactor?: number[];
    /** longrope: cos and sin are multiplied by this (transformers' attention_factor). */
    attentionFactor?: number;
  };
  tieWordEmbeddings: boolean;
  attentionBias: boolean;
  // Family switches; each absent key keeps Llama's behaviour.
  /** MLP gate: SwiGLU ('silu', default) or GeGLU with tanh-approximate GELU (Gemma). */
  activation?: 'silu' | 'gelu_tanh';
  /** Added to every RMSNorm weight at load: 1 for Gemma's (1 + w) from an HF file, else 0. */
  normWeightOffset?: number;
  /** Embeddings are multiplied by this (Gemma: √hidden, rounded to float32). */
  embeddingScale?: number;
  /** Attention score scale (Gemma 2/3: query_pre_attn_scalar^-½); default 1/√headDim. */
  attentionScale?: number;
  /** Attention scores become c·tanh(s/c) (Gemma 2); 0 or absent for none. */
  attnLogitSoftcap?: number;
  /** Logits become c·tanh(z/c) (Gemma 2), in log-probs, their gradients and sampling. */
  finalLogitSoftcap?: number;
  /** RMSNorm per head on q and k before RoPE (Qwen3, Gemma 3): q_norm / k_norm weights. */
  qkNorm?: boolean;
  /** Norms on the attention and MLP outputs too (Gemma 2/3): pre/post feed-forward norms. */
  sandwichNorms?: boolean;
  /** A windowed layer's query at position i sees keys at positions j with i − w < j ≤ i. */
  slidingWindow?: number;
  /** Per layer; absent with a window means every layer is windowed (Mistral). */
  layerTypes?: ('full_attention' | 'sliding_attention')[];
  /** RoPE base of the windowed layers (Gemma 3's local base), unscaled; absent: ropeTheta. */
  localRopeTheta?: number;
  /**
   * The checkpoint fuses q/k/v (qkv_proj) and gate/up (gate_up_proj), as Phi-3 does: the
   * loader splits them; LoRA adapts the fused layers under PEFT's names.
   */
  fusedProjections?: boolean;
  /** Dimensions of each head RoPE rotates, the rest passing through (Phi-4-mini: ¾ of 128); absent: headDim. */
  rotaryDim?: number;
}

/** Where one weight tensor comes from, under its Hugging Face name. */
export type TensorSource = {
  name: string;
  /** Outermost first, e.g. [out, in] for a linear weight. */
  shape: number[];
  /** GGUF stores Q and K rows interleaved for its RoPE; > 0 undoes that for this many heads. */
  unpermuteHeads?: number;
} & (
  | { file: string; offset: number; dtype: string }
  | { data: Float32Array }
  | { init: { kind: 'normal' | 'ones' | 'zeros'; std?: number; seed?: number; dtype?: WeightDtype } }
);

/**
 * How weights are stored: 'F32', or a type the CPU keeps as it is and widens inside its GEMM
 * (IEEE halves, bfloat16, GGUF blocks). Random-init matrices can be rounded to F32, F16,
 * BF16, Q8_0, Q4_0 or Q4_1; files hold any of them.
 */
export type WeightDtype = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q4_K' | 'Q5_K' | 'Q6_K';

export interface NativeModelSpec {
  config: EngineConfig;
  tensors: TensorSource[];
  device: string;
  threads?: number;
  /** 'stored' (default): matrices stay in their stored type where the backend keeps it; 'f32': widened at load. */
  weights?: 'stored' | 'f32';
}

/**
 * A forest of token rows and the trie edges whose log-probabilities are wanted. parents[r] is
 * an earlier row or -1; edgeRows[e] is the row the edge leaves from, edgeTokens[e] its token.
 */
export interface NativeBatch {
  tokens: Int32Array;
  parents: Int32Array;
  edgeRows: Int32Array;
  edgeTokens: Int32Array;
  edgeWeights?: Float32Array;
}

export type ObjectiveKind = 'ce' | 'gem-linear' | 'gem-logsigmoid';
export interface NativeObjective {
  kind: ObjectiveKind;
  beta?: number;
}

export interface NativeAdamW {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
  gradScale: number;
}

export type TensorPart = 'param' | 'grad' | 'm' | 'v';

export interface NativeAdapterTensor {
  name: string;
  layer: number;
  module: string;
  shape: [number, number];
}

export interface NativeAdapter {
  getTensor(name: string, part?: TensorPart): Promise<Float32Array>;
  setTensor(name: string, values: Float32Array, part?: TensorPart): Promise<void>;
  zeroGrad(): Promise<void>;
  gradSumSquares(): Promise<number>;
  adamwStep(params: NativeAdamW): Promise<void>;
  describe(): { rank: number; alpha: number; parameterCount: number; tensors: NativeAdapterTensor[] };
  dispose(): void;
}

export interface NativeSampleParams {
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  step: number;
}

export interface NativeSession {
  /** Appends rows (parents are session rows or -1); resolves to the first new row's index. */
  append(tokens: Int32Array, parents: Int32Array): Promise<number>;
  sample(rows: Int32Array, streams: Uint32Array, params: NativeSampleParams): Promise<{ tokens: Int32Array; logProbs: Float32Array }>;
  reset(): Promise<void>;
  /** Drops every row from `rows` on; the rows before it stay cached. */
  truncate(rows: number): Promise<void>;
  rows(): number;
  dispose(): void;
}

export interface NativeModel {
  forward(batch: NativeBatch, adapter?: NativeAdapter | null): Promise<{ edgeLogProbs: Float32Array }>;
  step(
    batch: NativeBatch,
    adapter: NativeAdapter,
    objective?: NativeObjective,
  ): Promise<{
    edgeLogProbs: Float32Array;
    edgeLoss: Float32Array;
    loss: number;
    recomputedLayers: number;
    /** CPU: the bytes the step's memory plan expected it to allocate at its peak (0 elsewhere). */
    plannedBytes: number;
  }>;
  createAdapter(options: { rank: number; alpha: number; targetModules: string[]; seed: number }): Promise<NativeAdapter>;
  createSession(options: { adapter?: NativeAdapter | null; capacity?: number }): Promise<NativeSession>;
  info(): { device: string; weightBytes: number };
  /** Bytes of activations a step keeps for the backward (layers past it are recomputed); null
   * goes back to the default, derived at each step from the device's available memory. */
  setActivationBudget(bytes: number | null): void;
  /** The budget the next step would use: the one set, or the default for the memory available now. */
  activationBudget(): number;
  dispose(): void;
}

export interface AttentionShapeArgs {
  qRows: number;
  kvRows: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  scale?: number;
  /** Scores become c·tanh(s/c) (Gemma 2); 0 or absent for none. */
  softcap?: number;
}

/** Kernel-level access to one backend, on host arrays: for tests and micro-benchmarks. */
export interface NativeOps {
  device(): string;
  embeddingForward(tokens: Int32Array, table: Float32Array, dim: number): Float32Array;
  rmsnormForward(x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): { y: Float32Array; rstd: Float32Array };
  rmsnormBackward(dy: Float32Array, x: Float32Array, w: Float32Array, rstd: Float32Array, dx: Float32Array, rows: number, dim: number): Float32Array;
  linearForward(args: {
    x: Float32Array;
    w: Float32Array;
    bias?: Float32Array;
    A?: Float32Array;
    B?: Float32Array;
    rank?: number;
    scale?: number;
    rows: number;
    inFeatures: number;
    outFeatures: number;
  }): { y: Float32Array; u: Float32Array };
  linearBackward(args: {
    dy: Float32Array;
    x: Float32Array;
    w: Float32Array;
    A?: Float32Array;
    B?: Float32Array;
    u?: Float32Array;
    rank?: number;
    scale?: number;
    rows: number;
    inFeatures: number;
    outFeatures: number;
    dx?: Float32Array;
    dA?: Float32Array;
    dB?: Float32Array;
  }): { dx: Float32Array; dA: Float32Array; dB: Float32Array };
  /** Rotates the first rotaryDim (default headDim) dims of each head; cos and sin times scale (default 1). */
  ropeForward(x: Float32Array, pos: Int32Array, invFreq: Float32Array, heads: number, headDim: number, rotaryDim?: number, scale?: number): Float32Array;
  ropeBackward(dx: Float32Array, pos: Int32Array, invFreq: Float32Array, heads: number, headDim: number, rotaryDim?: number, scale?: number): Float32Array;
  attentionForward(
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    keyOffsets: Int32Array,
    keyRows: Int32Array,
    shape: AttentionShapeArgs,
  ): { out: Float32Array; lse: Float32Array };
  attentionBackward(
    dout: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    out: Float32Array,
    lse: Float32Array,
    keyOffsets: Int32Array,
    keyRows: Int32Array,
    shape: AttentionShapeArgs,
  ): { dq: Float32Array; dk: Float32Array; dv: Float32Array };
  swigluForward(gate: Float32Array, up: Float32Array): Float32Array;
  swigluBackward(dh: Float32Array, gate: Float32Array, up: Float32Array): { dgate: Float32Array; dup: Float32Array };
  gegluForward(gate: Float32Array, up: Float32Array): Float32Array;
  gegluBackward(dh: Float32Array, gate: Float32Array, up: Float32Array): { dgate: Float32Array; dup: Float32Array };
  /** x·s, with s first rounded to the activation type. */
  scaleInplace(x: Float32Array, s: number): Float32Array;
  addInplace(y: Float32Array, x: Float32Array): Float32Array;
  logprobsForward(args: LogprobArgs): { edgeLogp: Float32Array; edgeLoss: Float32Array; parentStats: Float32Array; edgeStats: Float32Array };
  logprobsBackward(args: LogprobArgs & { parentStats: Float32Array; edgeStats: Float32Array; dhidden: Float32Array }): Float32Array;
  sample(args: {
    hidden: Float32Array;
    head: Float32Array;
    vocab: number;
    dim: number;
    rows: Int32Array;
    streams: Uint32Array;
    temperature?: number;
    topK?: number;
    topP?: number;
    seed?: number;
    step?: number;
    logitSoftcap?: number;
  }): { tokens: Int32Array; logp: Float32Array };
  adamwUpdate(param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, params: Partial<NativeAdamW>): {
    param: Float32Array;
    m: Float32Array;
    v: Float32Array;
  };
  /** The sum of squares of one tensor, or of several in one pass (in double). */
  sumSquares(x: Float32Array | Float32Array[]): number;
}

export interface LogprobArgs {
  hidden: Float32Array;
  head: Float32Array;
  vocab: number;
  dim: number;
  parentRows: Int32Array;
  edgeParent: Int32Array;
  edgeToken: Int32Array;
  edgeWeight?: Float32Array;
  objective?: NativeObjective;
  /** Logits become c·tanh(z/c) (Gemma 2's final soft-cap); 0 or absent for none. */
  logitSoftcap?: number;
}

export interface CudaStatus {
  available: boolean;
  reason: string;
  library: string;
  devices: string[];
}

export interface NativeAddon {
  createModel(spec: NativeModelSpec): Promise<NativeModel>;
  ops(device?: string): NativeOps;
  gemm(
    kind: 'nt' | 'nn' | 'tn',
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    B: Float32Array | { dtype: WeightDtype; bytes: Uint8Array },
    C?: Float32Array | null,
    extra?: { A2: Float32Array; B2: Float32Array; K2: number },
  ): Float32Array;
  dequantize(type: string, bytes: Uint8Array, count: number): Float32Array;
  quantize(type: WeightDtype, values: Float32Array): Uint8Array;
  /** Values [c0, c1) of one stored row, widened as the GEMM's packing widens them. */
  widenRange(type: WeightDtype, row: Uint8Array, c0: number, c1: number): Float32Array;
  setThreads(n: number): void;
  /** Caps this process's memory (bytes; 0 removes the cap) for the engine's load and step planning. */
  setMemoryLimit(bytes: number): void;
  /** Frees the activation blocks kept for reuse (resident, but counted by planning as available). */
  releaseKeptMemory(): void;
  threadCount(): number;
  gemmIsa(): string;
  cudaStatus(): CudaStatus;
  /** The default activation budget when `availableBytes` of device memory are free (engine/model.h). */
  defaultActivationBudget(availableBytes: number): number;
}

/** The package root (where package.json, build/ and prebuilds/ live). */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

let addon: NativeAddon | undefined;

/** Loads the addon once: a prebuilt binary for this platform, or the one built at install. */
export function native(): NativeAddon {
  if (!addon) {
    const require = createRequire(import.meta.url);
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    addon = load(packageRoot);
  }
  return addon;
}
