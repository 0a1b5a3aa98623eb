/**
 * A LoRA adapter living in a model's engine memory: y = x Wᵀ + (α/r)·(x Aᵀ) Bᵀ on each
 * adapted linear layer. Created fresh by `model.createAdapter()` (A Kaiming-uniform, B = 0, as
 * Hugging Face PEFT initialises them), or loaded from a PEFT directory.
 */
import { DiffuseError, InvalidArgumentError, nativeCall } from '../errors.js';
import type { NativeAdamW, NativeAdapter, NativeAdapterTensor, TensorPart } from '../native.js';
import { loraDefaults } from '../train/defaults.js';

/** The linear layers LoRA can adapt, in PEFT's names (the default: all seven). */
export const loraModules = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
/** The same for a checkpoint that fuses q/k/v and gate/up (Phi-3): PEFT adapts the fused layers. */
export const fusedLoraModules = ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'] as const;
/** Every module name, in the engine's order. */
export const allLoraModules = ['q_proj', 'k_proj', 'v_proj', 'qkv_proj', 'o_proj', 'gate_proj', 'up_proj', 'gate_up_proj', 'down_proj'] as const;
/** A projection LoRA can adapt, in PEFT names (Phi-3's fused ones included). */
export type LoraModule = (typeof allLoraModules)[number];

/** The block a module sits in: PEFT's self_attn or mlp. */
export function moduleBlock(module: string): 'self_attn' | 'mlp' {
  return ['gate_proj', 'up_proj', 'gate_up_proj', 'down_proj'].includes(module) ? 'mlp' : 'self_attn';
}

/** A fresh adapter: rank, alpha, the projections adapted, and the seed of A. */
export interface AdapterOptions {
  /** LoRA rank r (default 4, the paper's). */
  rank?: number;
  /** LoRA alpha; the update is scaled by alpha / rank (default 8, PEFT's). */
  alpha?: number;
  /** Which linear layers to adapt (default all seven, or Phi-3's four fused and plain ones). */
  targetModules?: LoraModule[];
  /** Seed of the A initialisation (default 0). */
  seed?: number;
}

export function checkAdapterOptions(options: AdapterOptions, fusedProjections = false): Required<AdapterOptions> {
  const rank = options.rank ?? 4;
  const alpha = options.alpha ?? 8;
  const targetModules = options.targetModules ?? [...(fusedProjections ? fusedLoraModules : loraModules)];
  const seed = options.seed ?? 0;
  if (!Number.isInteger(rank) || rank < 1 || rank > 4096) throw new InvalidArgumentError(`LoRA rank must be an integer from 1 to 4096, not ${rank}`);
  if (!Number.isFinite(alpha) || alpha <= 0) throw new InvalidArgumentError(`LoRA alpha must be a positive number, not ${alpha}`);
  if (!Array.isArray(targetModules) || targetModules.length === 0) throw new InvalidArgumentError('targetModules must list at least one module');
  for (const m of targetModules)
    if (!allLoraModules.includes(m)) throw new InvalidArgumentError(`unknown LoRA target module '${m}'; choose from ${allLoraModules.join(', ')}`);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new InvalidArgumentError(`seed must be a non-negative integer, not ${seed}`);
  // "All seven" (the CLI's and configs' default) on a fused checkpoint means all its linear
  // layers, the fused four; any other list of split names there is refused by the engine.
  const all = new Set<string>(loraModules);
  const unique = [...new Set(targetModules)];
  if (fusedProjections && unique.length === all.size && unique.every((m) => all.has(m))) return { rank, alpha, targetModules: [...fusedLoraModules], seed };
  return { rank, alpha, targetModules: unique, seed };
}

/** One A or B matrix: engine name, layer, projection, shape and PEFT key. */
export interface AdapterTensor extends NativeAdapterTensor {
  /** PEFT's key: base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight */
  peftKey: string;
}

export function peftKey(t: NativeAdapterTensor): string {
  const block = moduleBlock(t.module);
  return `base_model.model.model.layers.${t.layer}.${block}.${t.module}.${t.name.endsWith('lora_A') ? 'lora_A' : 'lora_B'}.weight`;
}

/** A LoRA adapter in its model's engine memory: y = x Wᵀ + (α/r)·(x Aᵀ) Bᵀ on each adapted projection. */
export class Adapter {
  /** LoRA rank r. */
  readonly rank: number;
  /** LoRA alpha; updates are scaled by alpha / rank. */
  readonly alpha: number;
  /** The projections adapted, in PEFT names. */
  readonly targetModules: LoraModule[];
  /** @internal the engine object */
  readonly native: NativeAdapter;
  /** @internal the model this adapter belongs to */
  readonly owner: object;
  private disposed = false;

  /** @internal use model.createAdapter() or model.loadAdapter() */
  constructor(native: NativeAdapter, owner: object, targetModules: LoraModule[]) {
    const d = native.describe();
    this.native = native;
    this.owner = owner;
    this.rank = d.rank;
    this.alpha = d.alpha;
    this.targetModules = targetModules;
  }

  /** Trainable parameters (Σ over adapted layers of r·(in + out)). */
  get parameterCount(): number {
    return this.live().describe().parameterCount;
  }

  /** Every A and B matrix with its shape and PEFT key. */
  tensors(): AdapterTensor[] {
    return this.live()
      .describe()
      .tensors.map((t) => ({ ...t, peftKey: peftKey(t) }));
  }

  /** A copy of one matrix (by engine name, see tensors()): its parameters, or with `part` its gradient ('grad') or AdamW moments ('m', 'v'). */
  getTensor(name: string, part: TensorPart = 'param'): Promise<Float32Array> {
    return nativeCall(() => this.live().getTensor(name, part));
  }

  /** Overwrites one matrix (or its gradient or AdamW moment) with `values`, row-major in the shape tensors() gives. */
  setTensor(name: string, values: Float32Array, part: TensorPart = 'param'): Promise<void> {
    return nativeCall(() => this.live().setTensor(name, values, part));
  }

  /** @internal training */
  zeroGrad(): Promise<void> {
    return nativeCall(() => this.live().zeroGrad());
  }

  /** @internal training: the global L2 norm of the accumulated gradients. */
  async gradNorm(): Promise<number> {
    return Math.sqrt(await nativeCall(() => this.live().gradSumSquares()));
  }

  /** @internal training: one AdamW update where the parameters live. */
  adamwStep(params: NativeAdamW): Promise<void> {
    return nativeCall(() => this.live().adamwStep(params));
  }

  /** Frees the adapter's engine memory. */
  dispose(): void {
    if (!this.disposed) this.native.dispose();
    this.disposed = true;
  }

  private live(): NativeAdapter {
    if (this.disposed) throw new DiffuseError('DISPOSED', 'this adapter was disposed');
    return this.native;
  }
}
