/**
 * Target sets: for each prompt, the token sequences of response ⊕ target (⊕ end of turn) in a
 * trie, laid out as one engine batch. The prompt is computed once; every common token prefix
 * of the targets is computed once; leaves need no position of their own, only an edge.
 *
 * Edge weights: W(n) = Σ p*(y) over the sequences through trie node n, so the loss
 * −Σ_y p*(y) log pθ(y|x) = −Σ_n W(n) log pθ(tok(n) | path to parent(n)).
 */
import { DiffuseError, InvalidArgumentError } from '../errors.js';
import type { NativeBatch } from '../native.js';
import type { ChatMessage } from '../tokenizer/chat-template.js';

/** A task prompt in the reference's JSON format (the paper's prompt files). */
export interface TargetRequest {
  request: string;
  /** Text the assistant's answer starts with; several are averaged over (default ""). */
  response?: string | string[];
  targets: string[];
  /** p*(y), normalised; uniform when absent. */
  weights?: number[];
  /** Append the end-of-turn tokens (default true), which also makes a set prefix-free. */
  eos?: boolean;
}

/** What a target set needs from a tokenizer. */
export interface ChatTokenizer {
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  encodeChat(messages: ChatMessage[], options?: { addGenerationPrompt?: boolean; variables?: Record<string, unknown> }): number[];
  decode(ids: number[]): string;
}

/** A task's target set is not usable as given. */
export class TargetSetError extends DiffuseError {
  constructor(message: string) {
    super('TASK', message);
  }
}

/** One response ⊕ target token sequence, as the model sees it after the prompt. */
export interface TargetSequence {
  target: number; // index into the prompt's targets
  response: number; // index into the prompt's responses
  tokens: number[];
  weight: number; // p*(target) / |responses|
}

/** A prompt tokenised for training and measuring: its tokens, its targets' token sequences after every response, and p*. */
export interface PreparedPrompt {
  request: string;
  responses: string[];
  targets: string[];
  /** Normalised p* per target (after merging duplicates). */
  weights: number[];
  promptTokens: number[];
  sequences: TargetSequence[];
}

/** How target sets are prepared. */
export interface PrepareOptions {
  /** Called with a message for each fixable oddity (duplicate targets merged). */
  warn?: (message: string) => void;
  /** Extra chat-template variables (transformers' chat_template_kwargs), e.g. { enable_thinking: false } for Qwen3. */
  chatTemplateKwargs?: Record<string, unknown>;
}

function normaliseWeights(request: TargetRequest, index: number): number[] {
  const n = request.targets.length;
  if (request.weights === undefined) return new Array<number>(n).fill(1 / n);
  if (!Array.isArray(request.weights) || request.weights.length !== n)
    throw new TargetSetError(`prompt ${index}: ${Array.isArray(request.weights) ? request.weights.length : 'non-list'} weights given for ${n} targets; give one weight per target or none`);
  let total = 0;
  request.weights.forEach((w, i) => {
    if (typeof w !== 'number' || !Number.isFinite(w) || w < 0)
      throw new TargetSetError(`prompt ${index}: weight ${i} (${String(w)}) for target ${JSON.stringify(request.targets[i])} must be a finite number ≥ 0`);
    total += w;
  });
  if (total <= 0) throw new TargetSetError(`prompt ${index}: all weights are zero; at least one target needs a positive weight`);
  return request.weights.map((w) => w / total);
}

function isPrefix(a: number[], b: number[]): boolean {
  if (a.length > b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Tokenises one prompt's targets the reference's way: the tokens of the full chat
 * [user, assistant(response + target)] minus those of [user] with the generation prompt; with
 * eos = false, the plain encoding of response + target.
 */
export function preparePrompt(tokenizer: ChatTokenizer, request: TargetRequest, index = 0, options: PrepareOptions = {}): PreparedPrompt {
  if (typeof request?.request !== 'string') throw new TargetSetError(`prompt ${index}: 'request' must be a string`);
  if (!Array.isArray(request.targets) || request.targets.length === 0)
    throw new TargetSetError(`prompt ${index} (${JSON.stringify(request.request.slice(0, 40))}${request.request.length > 40 ? '…' : ''}): the target list is empty; give at least one target`);
  request.targets.forEach((t, i) => {
    if (typeof t !== 'string') throw new TargetSetError(`prompt ${index}: target ${i} must be a string`);
  });
  const responses = request.response === undefined ? [''] : Array.isArray(request.response) ? request.response : [request.response];
  if (responses.length === 0 || responses.some((r) => typeof r !== 'string'))
    throw new TargetSetError(`prompt ${index}: 'response' must be a string or a non-empty list of strings`);
  const eos = request.eos ?? true;
  const rawWeights = normaliseWeights(request, index);

  // Merge duplicate targets, summing their weights.
  const targets: string[] = [];
  const weights: number[] = [];
  const seen = new Map<string, number>();
  request.targets.forEach((t, i) => {
    const at = seen.get(t);
    if (at === undefined) {
      seen.set(t, targets.length);
      targets.push(t);
      weights.push(rawWeights[i]);
    } else {
      weights[at] += rawWeights[i];
      options.warn?.(`prompt ${index}: target ${JSON.stringify(t)} appears more than once; its weights were merged`);
    }
  });

  const user: ChatMessage[] = [{ role: 'user', content: request.request }];
  const variables = options.chatTemplateKwargs;
  const promptTokens = tokenizer.encodeChat(user, { addGenerationPrompt: true, variables });
  const sequences: TargetSequence[] = [];
  targets.forEach((target, t) => {
    responses.forEach((response, r) => {
      let tokens: number[];
      if (eos) {
        const full = tokenizer.encodeChat([...user, { role: 'assistant', content: response + target }], { variables });
        if (!isPrefix(promptTokens, full))
          throw new TargetSetError(
            `prompt ${index}: the chat template does not extend the generation prompt when the assistant answers ${JSON.stringify(response + target)}, so target tokens cannot be taken as a suffix`,
          );
        tokens = full.slice(promptTokens.length);
      } else {
        tokens = tokenizer.encode(response + target, { addSpecialTokens: false });
      }
      if (tokens.length === 0) throw new TargetSetError(`prompt ${index}: target ${JSON.stringify(target)} has no tokens`);
      sequences.push({ target: t, response: r, tokens, weight: weights[t] / responses.length });
    });
  });

  // Prefix-freeness, over token sequences (sorting puts a prefix right before its extensions).
  const order = sequences.map((_, i) => i).sort((a, b) => {
    const x = sequences[a].tokens, y = sequences[b].tokens;
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  });
  for (let i = 1; i < order.length; i++) {
    const a = sequences[order[i - 1]], b = sequences[order[i]];
    if (isPrefix(a.tokens, b.tokens)) {
      const ta = JSON.stringify(responses[a.response] + targets[a.target]);
      const tb = JSON.stringify(responses[b.response] + targets[b.target]);
      throw new TargetSetError(
        a.tokens.length === b.tokens.length
          ? `prompt ${index}: ${ta} and ${tb} tokenise to the same tokens, so the model cannot tell them apart; merge them`
          : `prompt ${index}: the set is not prefix-free: ${ta} is a prefix of ${tb}, so p(${ta}) can never equal p(${tb}); set "eos": true to end every target with the end-of-turn token`,
      );
    }
  }
  return { request: request.request, responses, targets, weights, promptTokens, sequences };
}

/** A batch of prompts in trie layout, with what is needed to read results back per target. */
export interface TrieBatch {
  batch: NativeBatch;
  prompts: PreparedPrompt[];
  /** pathEdges[p][s]: the edge indices along sequence s of prompt p. */
  pathEdges: number[][][];
  /** Engine rows: prompt positions plus internal trie nodes. */
  positions: number;
  /** What the reference's padded batches of `batchSize` targets compute: Σ B·(P + max|y|). */
  paddedPositions: number;
}

interface TrieNode {
  token: number;
  weight: number;
  children: Map<number, TrieNode>;
  edge: number;
  row: number;
}

/**
 * Lays prepared prompts out as one engine batch of independent segments. With `ropeSplit`
 * (LongRoPE's original context, for a model that has it), a prompt whose sequences straddle it
 * — prompt + sequence longer than ropeSplit for some, not for others — gets two segments, one
 * of the short sequences and one of the long (the prompt computed twice), so that the engine,
 * which picks LongRoPE's factor set per segment by its deepest position, gives each sequence
 * the set transformers uses for it alone.
 */
export function buildTrieBatch(prompts: PreparedPrompt[], options: { paddedBatchSize?: number; ropeSplit?: number } = {}): TrieBatch {
  if (prompts.length === 0) throw new InvalidArgumentError('no prompts to batch');
  const batchSize = options.paddedBatchSize ?? 32;
  const tokens: number[] = [];
  const parents: number[] = [];
  const edgeRows: number[] = [];
  const edgeTokens: number[] = [];
  const edgeWeights: number[] = [];
  const pathEdges: number[][][] = [];
  let paddedPositions = 0;

  for (const prompt of prompts) {
    const P = prompt.promptTokens.length;
    if (P === 0) throw new InvalidArgumentError(`prompt ${JSON.stringify(prompt.request.slice(0, 40))} has no tokens`);
    const all = prompt.sequences.map((_, i) => i);
    const split = options.ropeSplit;
    const isLong = (i: number) => split !== undefined && P + prompt.sequences[i].tokens.length > split;
    const long = all.filter(isLong);
    const groups = long.length === 0 || long.length === all.length ? [all] : [all.filter((i) => !isLong(i)), long];
    const paths: number[][] = new Array(prompt.sequences.length);
    for (const group of groups) {
      const first = tokens.length;
      prompt.promptTokens.forEach((t, i) => {
        tokens.push(t);
        parents.push(i === 0 ? -1 : first + i - 1);
      });
      // Build the trie.
      const root: TrieNode = { token: -1, weight: 0, children: new Map(), edge: -1, row: first + P - 1 };
      for (const s of group) {
        const seq = prompt.sequences[s];
        let node = root;
        for (const t of seq.tokens) {
          let child = node.children.get(t);
          if (!child) {
            child = { token: t, weight: 0, children: new Map(), edge: -1, row: -1 };
            node.children.set(t, child);
          }
          child.weight += seq.weight;
          node = child;
        }
      }
      // Rows for internal nodes (breadth first, so parents come before children), an edge per node.
      const queue: TrieNode[] = [root];
      for (let q = 0; q < queue.length; q++) {
        const node = queue[q];
        for (const child of node.children.values()) {
          child.edge = edgeRows.length;
          edgeRows.push(node.row);
          edgeTokens.push(child.token);
          edgeWeights.push(child.weight);
          if (child.children.size > 0) {
            child.row = tokens.length;
            tokens.push(child.token);
            parents.push(node.row);
            queue.push(child);
          }
        }
      }
      for (const s of group) {
        const path: number[] = [];
        let node = root;
        for (const t of prompt.sequences[s].tokens) {
          node = node.children.get(t)!;
          path.push(node.edge);
        }
        paths[s] = path;
      }
    }
    pathEdges.push(paths);
    // The reference pads each batch of targets (one response drawn per target) to its longest.
    const lengths = prompt.targets.map((_, t) => Math.max(...prompt.sequences.filter((s) => s.target === t).map((s) => s.tokens.length)));
    for (let i = 0; i < lengths.length; i += batchSize) {
      const chunk = lengths.slice(i, i + batchSize);
      paddedPositions += chunk.length * (P + Math.max(...chunk));
    }
  }
  return {
    batch: {
      tokens: Int32Array.from(tokens),
      parents: Int32Array.from(parents),
      edgeRows: Int32Array.from(edgeRows),
      edgeTokens: Int32Array.from(edgeTokens),
      edgeWeights: Float32Array.from(edgeWeights),
    },
    prompts,
    pathEdges,
    positions: tokens.length,
    paddedPositions,
  };
}

/**
 * The reference algorithm's layout without its padding: every response ⊕ target as its own full
 * sequence, the prompt recomputed each time. Same edges, same log-probabilities; used to check
 * the trie against what the paper's code computes.
 */
export function buildSequenceBatch(prompts: PreparedPrompt[]): TrieBatch {
  const tokens: number[] = [];
  const parents: number[] = [];
  const edgeRows: number[] = [];
  const edgeTokens: number[] = [];
  const edgeWeights: number[] = [];
  const pathEdges: number[][][] = [];
  for (const prompt of prompts) {
    pathEdges.push(
      prompt.sequences.map((seq) => {
        const path: number[] = [];
        const seqTokens = [...prompt.promptTokens, ...seq.tokens];
        const first = tokens.length;
        seqTokens.forEach((t, i) => {
          // The last token needs no row, only its edge.
          if (i === seqTokens.length - 1) return;
          tokens.push(t);
          parents.push(i === 0 ? -1 : first + i - 1);
        });
        seq.tokens.forEach((t, j) => {
          path.push(edgeRows.length);
          edgeRows.push(first + prompt.promptTokens.length - 1 + j);
          edgeTokens.push(t);
          edgeWeights.push(seq.weight);
        });
        return path;
      }),
    );
  }
  const positions = tokens.length;
  return {
    batch: {
      tokens: Int32Array.from(tokens),
      parents: Int32Array.from(parents),
      edgeRows: Int32Array.from(edgeRows),
      edgeTokens: Int32Array.from(edgeTokens),
      edgeWeights: Float32Array.from(edgeWeights),
    },
    prompts,
    pathEdges,
    positions,
    paddedPositions: positions,
  };
}

/** Per-sequence log-probabilities from per-edge ones. */
export function sequenceLogProbs(trie: TrieBatch, edgeLogProbs: ArrayLike<number>): number[][] {
  return trie.pathEdges.map((paths) => paths.map((path) => path.reduce((s, e) => s + edgeLogProbs[e], 0)));
}
