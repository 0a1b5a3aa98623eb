/**
 * A loaded model and what it computes: exact target distributions, the training step, adapters.
 * loadModel() (load.ts) makes one.
 */
import { DiffuseError, InvalidArgumentError, nativeCall } from '../errors.js';
import { entropy } from '../eval/stats.js';
import type { EngineConfig, NativeModel } from '../native.js';
import { toNativeObjective, type Objective } from '../train/objective.js';
import {
  buildTrieBatch,
  preparePrompt,
  sequenceLogProbs,
  type PrepareOptions,
  type PreparedPrompt,
  type TargetRequest,
  type TrieBatch,
} from '../targets/target-set.js';
import type { ChatMessage, Tokenizer } from '../tokenizer/index.js';
import { loadAdapter, type LoadAdapterOptions } from '../adapters/peft.js';
import { loadGgufLoraAdapter } from '../adapters/gguf-lora.js';
import { Adapter, checkAdapterOptions, type AdapterOptions } from './adapter.js';
import { generate, type GeneratedSample, type GenerateOptions } from '../generate/generate.js';

/** One target of a set, as the model sees it. */
export interface TargetResult {
  target: string;
  /** Token ids of response ⊕ target (⊕ end of turn), the first response's. */
  tokens: number[];
  /** log pθ(target | request) in nats (averaged over responses in probability). */
  logprob: number;
  prob: number;
  /** p*(target), the normalised weight. */
  weight: number;
}

/** The model's distribution over a target set. */
export interface TargetDistribution {
  request: string;
  targets: TargetResult[];
  /** pθ renormalised over the set. */
  distribution: number[];
  /** Entropy (nats) of `distribution`. */
  entropy: number;
  /** H(p*): the entropy of the weights, the best achievable loss. */
  optimalEntropy: number;
  /** KL(p* ‖ pθ) = Σ p* · log(p* / pθ) with pθ as is (the paper's eq. 2); equals loss − H(p*). */
  kl: number;
  /** −Σ p* log pθ: the training loss of this prompt. */
  loss: number;
  /** 1 − Σ pθ(y): the probability the model puts outside the set. */
  outsideMass: number;
  /** Token positions the engine computed (prompt + internal trie nodes). */
  positions: number;
  /** Positions the reference's padded batches of 32 would have computed. */
  paddedPositions: number;
}

/** What one training step (model.step) computed, before its update. */
export interface StepResult {
  /** Σ over prompts of −Σ p* log pθ (the objective's value for GEM). */
  loss: number;
  /** Σ over prompts of H(p*). */
  optimalLoss: number;
  /** Per prompt, per sequence (response ⊕ target, in `PreparedPrompt.sequences` order): log pθ before this step's update. */
  sequenceLogProbs: number[][];
  positions: number;
}

function logMeanExp(xs: number[]): number {
  const m = Math.max(...xs);
  return m + Math.log(xs.reduce((s, x) => s + Math.exp(x - m), 0) / xs.length);
}

/** Summarises one prompt's per-sequence log-probabilities. */
export function distributionOf(prompt: PreparedPrompt, sequenceLogp: number[], positions: number, paddedPositions: number): TargetDistribution {
  const perTarget = prompt.targets.map((_, t) => logMeanExp(prompt.sequences.flatMap((s, i) => (s.target === t ? [sequenceLogp[i]] : []))));
  const probs = perTarget.map(Math.exp);
  const inside = probs.reduce((a, b) => a + b, 0);
  const distribution = probs.map((p) => p / inside);
  const loss = -prompt.sequences.reduce((s, seq, i) => s + seq.weight * sequenceLogp[i], 0);
  const optimalEntropy = entropy(prompt.weights);
  return {
    request: prompt.request,
    targets: prompt.targets.map((target, t) => ({
      target,
      tokens: prompt.sequences.find((s) => s.target === t)!.tokens,
      logprob: perTarget[t],
      prob: probs[t],
      weight: prompt.weights[t],
    })),
    distribution,
    entropy: entropy(distribution),
    optimalEntropy,
    kl: prompt.weights.reduce((s, w, t) => (w > 0 ? s + w * (Math.log(w) - perTarget[t]) : s), 0),
    loss,
    outsideMass: Math.max(0, 1 - inside),
    positions,
    paddedPositions,
  };
}

/** A loaded model (made by loadModel): exact target distributions, the training step, its adapters. */
export class Model {
  /** What was asked for: a model name, path or hub id, or 'random:<preset>'. */
  readonly spec: string;
  /** The decoder shape the engine runs. */
  readonly config: EngineConfig;
  /** Where the engine runs: 'cpu' or 'cuda:<device name>'. */
  readonly device: string;
  /** @internal */
  readonly native: NativeModel;
  private readonly tok: Tokenizer | undefined;
  private disposed = false;

  /** @internal use loadModel() */
  constructor(spec: string, config: EngineConfig, nativeModel: NativeModel, tokenizer: Tokenizer | undefined) {
    this.spec = spec;
    this.config = config;
    this.native = nativeModel;
    this.device = nativeModel.info().device;
    this.tok = tokenizer;
  }

  /** The model's tokenizer and chat template. Random-weight models have none. */
  get tokenizer(): Tokenizer {
    if (!this.tok) throw new DiffuseError('UNSUPPORTED', `${this.spec} has random weights and no tokenizer; use token ids directly`);
    return this.tok;
  }

  /**
   * Prepared prompts as one engine batch (buildTrieBatch); for a LongRoPE model, a prompt whose
   * sequences straddle the original context gets one segment per side, so every sequence is
   * computed with the factor set transformers gives it alone.
   */
  trieBatch(prompts: PreparedPrompt[]): TrieBatch {
    const s = this.config.ropeScaling;
    return buildTrieBatch(prompts, s?.type === 'longrope' ? { ropeSplit: s.originalMaxPositionEmbeddings } : {});
  }

  /** Tokenises prompts and their targets the reference's way (see lib/targets/target-set.ts). */
  prepare(requests: TargetRequest[], options: PrepareOptions = {}): PreparedPrompt[] {
    return requests.map((r, i) => preparePrompt(this.tokenizer, r, i, options));
  }

  /** The exact distribution the model (with an adapter, if given) puts on each target. */
  async targetLogProbs(request: TargetRequest, options: { adapter?: Adapter; chatTemplateKwargs?: Record<string, unknown> } = {}): Promise<TargetDistribution> {
    return (await this.targetDistributions([request], options))[0];
  }

  /** targetLogProbs for several prompts in one engine call (one trie segment each). */
  async targetDistributions(
    requests: TargetRequest[],
    options: { adapter?: Adapter; warn?: (message: string) => void; chatTemplateKwargs?: Record<string, unknown> } = {},
  ): Promise<TargetDistribution[]> {
    const prompts = this.prepare(requests, { warn: options.warn, chatTemplateKwargs: options.chatTemplateKwargs });
    const tries = prompts.map((p) => this.trieBatch([p]));
    const all = this.trieBatch(prompts);
    const { edgeLogProbs } = await nativeCall(() => this.live().forward(all.batch, this.adapterFor(options.adapter)));
    const perSequence = sequenceLogProbs(all, edgeLogProbs);
    const bad = perSequence.findIndex((p) => p.some((x) => !Number.isFinite(x)));
    if (bad >= 0)
      throw new DiffuseError(
        'DIVERGED',
        `the model${options.adapter ? ' with this adapter' : ''} gives non-finite log-probabilities for prompt ${bad} (${JSON.stringify(prompts[bad].request.slice(0, 40))}): its activations overflow${options.adapter ? '; the adapter holds values too large (was it saved from a diverged run? use an earlier checkpoint)' : ''}`,
      );
    return prompts.map((p, i) => distributionOf(p, perSequence[i], tries[i].positions, tries[i].paddedPositions));
  }

  /**
   * Samples answers to a user message (or a chat) as an async iterator, each sample yielded as
   * it finishes; `options.signal` stops it between decode steps. See lib/generate/generate.ts.
   */
  generate(request: string | ChatMessage[], options: GenerateOptions): AsyncGenerator<GeneratedSample> {
    this.live();
    return generate(this, request, options);
  }

  /** A fresh LoRA adapter on this model: A Kaiming-uniform, B = 0 (no change until trained), as PEFT initialises one. */
  createAdapter(options: AdapterOptions = {}): Promise<Adapter> {
    const o = checkAdapterOptions(options, this.config.fusedProjections);
    return nativeCall(async () => new Adapter(await this.live().createAdapter(o), this, o.targetModules));
  }

  /**
   * Loads a LoRA adapter: a directory in Hugging Face PEFT layout (by diffuse or by PEFT), or a
   * llama.cpp GGUF LoRA file (*.gguf).
   */
  loadAdapter(path: string, options: LoadAdapterOptions = {}): Promise<Adapter> {
    return /\.gguf$/i.test(path) ? loadGgufLoraAdapter(this, path, options) : loadAdapter(this, path, options);
  }

  /**
   * One forward + backward over the prompts' tries, accumulating the LoRA gradients of
   * Σ_prompts −Σ_y p*(y) log pθ(y|x) (or the GEM objective) into the adapter.
   */
  async step(prompts: PreparedPrompt[] | TrieBatch, adapter: Adapter, objective: Objective = { kind: 'ce' }): Promise<StepResult> {
    const trie = Array.isArray(prompts) ? this.trieBatch(prompts) : prompts;
    const nativeObjective = toNativeObjective(objective);
    const out = await nativeCall(() => this.live().step(trie.batch, this.adapterFor(adapter)!, nativeObjective));
    return {
      loss: out.loss,
      optimalLoss: trie.prompts.reduce((s, p) => s + entropy(p.weights), 0),
      sequenceLogProbs: sequenceLogProbs(trie, out.edgeLogProbs),
      positions: trie.positions,
    };
  }

  /** Frees the model's engine memory; using it afterwards is a DISPOSED error. */
  dispose(): void {
    if (!this.disposed) this.native.dispose();
    this.disposed = true;
  }

  /** @internal */
  live(): NativeModel {
    if (this.disposed) throw new DiffuseError('DISPOSED', 'this model was disposed');
    return this.native;
  }

  private adapterFor(adapter: Adapter | undefined) {
    if (!adapter) return undefined;
    if (adapter.owner !== this) throw new InvalidArgumentError('this adapter was created by another model');
    return adapter.native;
  }
}
