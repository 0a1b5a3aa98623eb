/**
 * Sampling continuations of one prompt through the engine's KV-cached session.
 *
 * A batch of B samples shares one prefilled prompt: the prompt's tokens are appended once as a
 * chain of rows, and every sample's first token is drawn from the prompt's last row. Each
 * decode step then makes one `sample` call for all live samples (the LM head and the draw) and
 * one `append` of their new tokens, each row naming its own sample's previous row as parent, so
 * the B chains share the prompt's cached keys and values and never see each other.
 *
 * Draws are counter-based: token t of sample i comes from the uniform (seed, stream = i, step = t),
 * so the same seed gives the same samples whatever the batch size, on any device, and whichever
 * other samples are drawn with it (a resumed run draws only the missing ones).
 */
import { InvalidArgumentError, nativeCall } from '../errors.js';
import type { Adapter } from '../model/adapter.js';
import type { Model } from '../model/model.js';
import type { ChatMessage } from '../tokenizer/index.js';

/** How samples are drawn: how many, temperature, top-k, top-p, length, seed, adapter. */
export interface SampleOptions {
  /** How many samples. */
  n: number;
  /** Softmax temperature (default 1, the paper's; 0 is greedy). */
  temperature?: number;
  /** Keep only the k most likely tokens (default 0: no limit). */
  topK?: number;
  /** Keep the smallest set of tokens holding this much probability (default 1: no limit). */
  topP?: number;
  /** Longest continuation, in tokens, the stop token included (default 64). */
  maxTokens?: number;
  /** Seed of the draws (default 0). */
  seed?: number;
  /** Sample from the model with this LoRA adapter. */
  adapter?: Adapter;
  /** Samples decoded together (default: as many as fit a 1 GiB KV cache, at most 256). */
  batchSize?: number;
  /** Called after every decode step with the samples finished and the tokens generated so far. */
  onProgress?: (finishedSamples: number, generatedTokens: number) => void;
}

/** Why a sample ended: 'stop' at an end-of-turn token, 'length' at maxTokens. */
export type FinishReason = 'stop' | 'length';

/** One sampled continuation as token ids. */
export interface TokenSample {
  /** The generated token ids, without the stop token. */
  tokens: number[];
  /** 'stop' at an end-of-sequence or end-of-turn token, 'length' at maxTokens. */
  finishReason: FinishReason;
  /** log pθ of the continuation at temperature 1, unfiltered, the stop token included (nats). */
  logProb: number;
}

export interface TokenSampling {
  samples: TokenSample[];
  promptTokens: number;
  /** Tokens drawn, stop tokens included. */
  generatedTokens: number;
  /** Wall time of the prefill and decode, seconds. */
  seconds: number;
}

/** One sampled continuation, decoded. */
export interface TextSample extends TokenSample {
  /** The decoded continuation, special tokens left out. */
  text: string;
}

/** What sample returns: the samples and what they cost. */
export interface Sampling extends Omit<TokenSampling, 'samples'> {
  samples: TextSample[];
}

interface CheckedOptions {
  n: number;
  temperature: number;
  topK: number;
  topP: number;
  maxTokens: number;
  seed: number;
  batchSize: number;
}

const KV_BUDGET_BYTES = 1 << 30;
const MAX_DEFAULT_BATCH = 256;

function checkOptions(model: Model, promptLength: number, o: SampleOptions): CheckedOptions {
  const int = (value: number, name: string, min: number) => {
    if (!Number.isSafeInteger(value) || value < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, not ${value}`);
    return value;
  };
  const n = int(o.n, 'the number of samples', 1);
  if (n > 0xffffffff) throw new InvalidArgumentError(`at most 2^32 samples can be drawn, not ${n}`);
  const temperature = o.temperature ?? 1;
  if (!Number.isFinite(temperature) || temperature < 0) throw new InvalidArgumentError(`temperature must be a finite number ≥ 0, not ${temperature}`);
  const topK = int(o.topK ?? 0, 'topK', 0);
  const topP = o.topP ?? 1;
  if (!(topP > 0 && topP <= 1)) throw new InvalidArgumentError(`topP must be in (0, 1], not ${topP}`);
  const maxTokens = int(o.maxTokens ?? 64, 'maxTokens', 1);
  const seed = int(o.seed ?? 0, 'seed', 0);
  if (promptLength === 0) throw new InvalidArgumentError('the prompt has no tokens');
  const c = model.config;
  // fp32 keys and values of every layer plus the final hidden state, per cached row.
  const bytesPerRow = 4 * (2 * c.numLayers * c.numKvHeads * c.headDim + c.hiddenSize);
  const fitting = Math.floor(KV_BUDGET_BYTES / (bytesPerRow * maxTokens));
  const batchSize = o.batchSize === undefined ? Math.min(n, MAX_DEFAULT_BATCH, Math.max(1, fitting)) : int(o.batchSize, 'batchSize', 1);
  return { n, temperature, topK, topP, maxTokens, seed, batchSize };
}

/** One sample as it finishes, with its index among the prompt's samples (its draw stream). */
export interface IndexedTokenSample extends TokenSample {
  index: number;
  /** Tokens drawn, the stop token included. */
  drawnTokens: number;
  /** The decoded text, cut before the first stop string (with `DrawOptions.decode` only). */
  text?: string;
}

export interface DrawOptions extends SampleOptions {
  /** Which samples to draw (default 0 … n − 1); sample i uses draw stream i whatever else is drawn. */
  indices?: readonly number[];
  /** Text of the tokens drawn so far; given, each finished sample carries its text. */
  decode?: (tokens: readonly number[]) => string;
  /** A sample also ends where its text first contains one of these (needs `decode`). */
  stopStrings?: readonly string[];
  /** Stops drawing between decode steps; the iterator then throws the signal's reason. */
  signal?: AbortSignal;
}

function checkIndices(indices: readonly number[]): number[] {
  for (const i of indices)
    if (!Number.isSafeInteger(i) || i < 0 || i > 0xffffffff) throw new InvalidArgumentError(`sample indices must be whole numbers below 2^32, not ${i}`);
  return [...indices];
}

/**
 * Draws samples of one prompt, yielding each as it finishes. The prompt is appended to the
 * session once; each batch of samples decodes from its last row and is truncated away after,
 * so the prompt's keys and values are computed once for all samples, never copied.
 */
export async function* drawSamples(model: Model, promptTokens: readonly number[], stopTokens: readonly number[], options: DrawOptions): AsyncGenerator<IndexedTokenSample> {
  const indices = options.indices ? checkIndices(options.indices) : undefined;
  const o = checkOptions(model, promptTokens.length, indices ? { ...options, n: Math.max(1, indices.length) } : options);
  const wanted = indices ?? Array.from({ length: o.n }, (_, i) => i);
  const stopStrings = (options.stopStrings ?? []).filter((x) => x !== '');
  if (stopStrings.length > 0 && !options.decode) throw new InvalidArgumentError('stop strings need a decode function to read the text');
  options.signal?.throwIfAborted();
  if (wanted.length === 0) return;
  const stop = new Set(stopTokens);
  const params = { temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed };
  const P = promptTokens.length;
  const batch = Math.min(o.batchSize, wanted.length);
  const adapterNative = options.adapter ? adapterOf(model, options.adapter) : undefined;
  const session = await nativeCall(() => model.live().createSession({ adapter: adapterNative, capacity: P + batch * (o.maxTokens - 1) }));
  let finished = 0, generatedTokens = 0;
  try {
    await nativeCall(() => session.append(Int32Array.from(promptTokens), Int32Array.from(promptTokens, (_, i) => i - 1)));
    for (let first = 0; first < wanted.length; first += batch) {
      const size = Math.min(batch, wanted.length - first);
      if (first > 0) await nativeCall(() => session.truncate(P));
      const own: IndexedTokenSample[] = Array.from({ length: size }, (_, i) => ({ index: wanted[first + i], tokens: [], finishReason: 'length', logProb: 0, drawnTokens: 0 }));
      // Live samples: their place in the batch and the session row their next token is drawn from.
      let live = Array.from({ length: size }, (_, i) => i);
      let rows = new Int32Array(size).fill(P - 1);
      for (let step = 0; live.length > 0; step++) {
        options.signal?.throwIfAborted();
        const streams = Uint32Array.from(live, (i) => own[i].index);
        const drawn = await nativeCall(() => session.sample(rows, streams, { ...params, step }));
        generatedTokens += live.length;
        const next: number[] = [];
        const nextTokens: number[] = [];
        const nextParents: number[] = [];
        const done: IndexedTokenSample[] = [];
        live.forEach((i, j) => {
          const token = drawn.tokens[j];
          const s = own[i];
          s.logProb += drawn.logProbs[j];
          s.drawnTokens++;
          if (stop.has(token)) {
            s.finishReason = 'stop';
          } else {
            s.tokens.push(token);
            if (stopStrings.length > 0) {
              const text = options.decode!(s.tokens);
              const at = Math.min(...stopStrings.map((x) => text.indexOf(x)).filter((k) => k >= 0));
              if (Number.isFinite(at)) {
                s.finishReason = 'stop';
                s.text = text.slice(0, at);
              }
            }
            if (s.finishReason !== 'stop' && s.tokens.length < o.maxTokens) {
              next.push(i);
              nextTokens.push(token);
              nextParents.push(rows[j]);
              return;
            }
          }
          if (options.decode && s.text === undefined) s.text = options.decode(s.tokens);
          done.push(s);
        });
        live = next;
        if (live.length > 0) {
          const firstRow = await nativeCall(() => session.append(Int32Array.from(nextTokens), Int32Array.from(nextParents)));
          rows = Int32Array.from(live, (_, j) => firstRow + j);
        }
        finished += done.length;
        options.onProgress?.(finished, generatedTokens);
        yield* done;
      }
    }
  } finally {
    session.dispose();
  }
}

/**
 * Samples `n` continuations of the token sequence `promptTokens`, each ending at the first of
 * `stopTokens` or after `maxTokens` tokens; in sample order.
 */
export async function sampleTokens(model: Model, promptTokens: readonly number[], stopTokens: readonly number[], options: SampleOptions): Promise<TokenSampling> {
  checkOptions(model, promptTokens.length, options);
  const started = performance.now();
  const samples: TokenSample[] = new Array<TokenSample>(options.n);
  let generatedTokens = 0;
  for await (const { index, drawnTokens, tokens, finishReason, logProb } of drawSamples(model, promptTokens, stopTokens, options)) {
    samples[index] = { tokens, finishReason, logProb };
    generatedTokens += drawnTokens;
  }
  return { samples, promptTokens: promptTokens.length, generatedTokens, seconds: (performance.now() - started) / 1000 };
}

/** The tokens that end a sample: the tokenizer's end of sequence and end of turn. */
export function stopTokensOf(model: Model): number[] {
  const t = model.tokenizer;
  return [...new Set([t.eosTokenId, t.endOfTurnId].filter((id): id is number => id !== undefined))];
}

/**
 * Samples `n` answers of the model to a user message (or a chat), rendered with the model's
 * chat template and its generation prompt, as the paper's code does.
 */
export async function sample(model: Model, prompt: string | ChatMessage[], options: SampleOptions): Promise<Sampling> {
  const messages: ChatMessage[] = typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt;
  const tokenizer = model.tokenizer;
  const promptTokens = tokenizer.encodeChat(messages, { addGenerationPrompt: true });
  const result = await sampleTokens(model, promptTokens, stopTokensOf(model), options);
  return { ...result, samples: result.samples.map((s) => ({ ...s, text: tokenizer.decode(s.tokens, { skipSpecialTokens: true }) })) };
}

function adapterOf(model: Model, adapter: Adapter) {
  if (adapter.owner !== model) throw new InvalidArgumentError('this adapter was created by another model');
  return adapter.native;
}
