/**
 * model.generate(): samples of one prompt as an async iterator, each yielded the moment it
 * finishes, on the engine path eval samples with (lib/eval/sample.ts): the prompt's keys and
 * values computed once and shared by every sample, the live samples decoded together as one
 * batch per step, the LM head and the draw on the engine side.
 *
 *   for await (const s of model.generate('Write a biography …', { n: 1000, seed: 1, signal }))
 *     console.log(s.index, s.text);
 *
 * Sample i always comes from draw stream i of the seed, so `indices` can ask for any subset (the
 * ones a killed run did not finish) and get exactly what an uninterrupted run would have written.
 */
import type { Model } from '../model/model.js';
import type { ChatMessage } from '../tokenizer/index.js';
import { drawSamples, stopTokensOf, type DrawOptions, type FinishReason } from '../eval/sample.js';

/** What to draw and how: eval's sampling settings, stop strings, indices, an AbortSignal. */
export interface GenerateOptions extends Omit<DrawOptions, 'decode' | 'onProgress' | 'stopStrings'> {
  /** A sample also ends where its text first contains one of these; the text stops before it. */
  stop?: readonly string[];
  /** Called after every decode step with the samples finished and the tokens drawn so far. */
  onProgress?: (finishedSamples: number, generatedTokens: number) => void;
}

/** One finished sample of a prompt. */
export interface GeneratedSample {
  /** Which sample of the prompt this is (0 … n − 1): its draw stream. */
  index: number;
  /** The seed it was drawn with. */
  seed: number;
  /** The generated text, special tokens left out, cut before a stop string. */
  text: string;
  /** The generated token ids, the stop token left out. */
  tokenIds: number[];
  /** Tokens drawn, the stop token included. */
  tokens: number;
  /** 'stop' at an end-of-turn token or a stop string, 'length' at maxTokens. */
  finishReason: FinishReason;
  /** log pθ of the tokens drawn at temperature 1, unfiltered (nats). */
  logProb: number;
}

/** The token ids a request is sampled after: the chat template with its generation prompt. */
export function promptTokensOf(model: Model, request: string | ChatMessage[]): number[] {
  const messages: ChatMessage[] = typeof request === 'string' ? [{ role: 'user', content: request }] : request;
  return model.tokenizer.encodeChat(messages, { addGenerationPrompt: true });
}

/** Samples answers of `model` to a user message (or a chat), yielding each as it finishes. */
export async function* generate(model: Model, request: string | ChatMessage[], options: GenerateOptions): AsyncGenerator<GeneratedSample> {
  const tokenizer = model.tokenizer;
  const promptTokens = promptTokensOf(model, request);
  const seed = options.seed ?? 0;
  const decode = (tokens: readonly number[]) => tokenizer.decode(tokens, { skipSpecialTokens: true });
  for await (const s of drawSamples(model, promptTokens, stopTokensOf(model), { ...options, decode, stopStrings: options.stop })) {
    yield { index: s.index, seed, text: s.text!, tokenIds: s.tokens, tokens: s.drawnTokens, finishReason: s.finishReason, logProb: s.logProb };
  }
}
