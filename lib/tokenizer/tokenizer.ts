/**
 * A model's tokenizer and chat template, giving the token ids transformers gives.
 *
 * Encoding runs @huggingface/tokenizers over a `tokenizer.json` (from an HF directory, or built
 * from a GGUF's metadata), made to split exactly as the Rust `tokenizers` crate does (see
 * tokenizer-json.ts). Chats render with the model's Jinja template and are then encoded without
 * adding special tokens, as transformers' `apply_chat_template(tokenize=True)` does.
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { InvalidArgumentError, UnsupportedError } from '../errors.js';
import { ChatTemplate, type ChatMessage, type ChatTemplateOptions } from './chat-template.js';
import { bosEosPostProcessor, withRustParity, type TokenizerJson } from './tokenizer-json.js';

export type { ChatMessage, ChatTemplateOptions } from './chat-template.js';

export type SpecialTokenName = 'bos_token' | 'eos_token' | 'unk_token' | 'pad_token';

/** Everything a Tokenizer is built from; the loaders (HF directory, GGUF) produce one. */
export interface TokenizerSpec {
  /** The directory or file it came from, for messages. */
  source: string;
  json: TokenizerJson;
  /** The named special tokens, as strings. */
  specialTokens: Partial<Record<SpecialTokenName, string>>;
  /**
   * When either is set, the post-processor becomes "[BOS] text [EOS]" with each part per its flag,
   * as transformers does when tokenizer_config.json states add_bos_token / add_eos_token.
   */
  addBosToken?: boolean;
  addEosToken?: boolean;
  /** transformers' clean_up_tokenization_spaces for decode (its default is false). */
  cleanUpTokenizationSpaces?: boolean;
  chatTemplate?: { text: string; origin: string };
  /** An end-of-turn id the file states (GGUF `tokenizer.ggml.eot_token_id`). */
  endOfTurnId?: number;
}

export interface EncodeOptions {
  /** Add what the post-processor adds (BOS for Llama-2 and kin); default true, like transformers. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens (BOS, EOS, <|im_end|> …); default false, like transformers. */
  skipSpecialTokens?: boolean;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The Rust crate's ByteFallback decoding of a run of byte tokens: its text when the bytes are
 * valid UTF-8 (a leading BOM kept), else one U+FFFD per byte. The JavaScript decoder drops a
 * leading BOM and replaces invalid sequences WHATWG-style (one U+FFFD per maximal subpart).
 */
const rustByteRun = {
  decode(bytes: Uint8Array): string {
    try {
      return strictUtf8.decode(bytes);
    } catch {
      return '\uFFFD'.repeat(bytes.length);
    }
  },
};

/** The parts of @huggingface/tokenizers we use (its bundled .d.ts files do not resolve under NodeNext). */
interface JsDecoder {
  config?: { type?: string };
  decoders?: JsDecoder[];
  text_decoder?: { decode(bytes: Uint8Array): string };
}

interface JsTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: (number | undefined)[]; tokens: string[] };
  decode(ids: number[], options: { skip_special_tokens: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  model: { vocab: string[] } | null;
  decoder: JsDecoder | null;
}

function decodeByteRunsAsRust(decoder: JsDecoder | null | undefined): void {
  if (!decoder) return;
  if (decoder.config?.type === 'ByteFallback') decoder.text_decoder = rustByteRun;
  decoder.decoders?.forEach(decodeByteRunsAsRust);
}

/** The end-of-turn tokens of the common chat formats, looked for when the file names none. */
const END_OF_TURN_TOKENS = ['<|im_end|>', '<|eot_id|>', '<end_of_turn>'];

function idInJson(json: TokenizerJson, token: string): number | undefined {
  const added = json.added_tokens.find((t) => t.content === token);
  if (added) return added.id;
  const vocab = json.model.vocab;
  if (vocab && typeof vocab === 'object' && !Array.isArray(vocab)) {
    const id = (vocab as Record<string, unknown>)[token];
    if (typeof id === 'number') return id;
  }
  return undefined;
}

/** Template variables diffuse sets itself (transformers passes them too). */
const RESERVED_TEMPLATE_VARIABLES = ['messages', 'add_generation_prompt', 'tools', 'documents'];

/** A model's tokenizer and chat template (from tokenizer.json or a GGUF's metadata), encoding exactly as the model was trained. */
export class Tokenizer {
  /** The directory or file it was read from. */
  readonly source: string;
  /** Token ids run from 0 to vocabSize − 1. */
  readonly vocabSize: number;
  /** The beginning-of-sequence id, when the tokenizer has one. */
  readonly bosTokenId: number | undefined;
  /** The end-of-sequence id, when the tokenizer has one. */
  readonly eosTokenId: number | undefined;
  /** The padding id, when the tokenizer has one. */
  readonly padTokenId: number | undefined;
  /** The token that ends an assistant turn: ChatML <|im_end|>, Llama-3 <|eot_id|>, Gemma <end_of_turn>, else EOS. */
  readonly endOfTurnId: number | undefined;
  /** The special tokens the chat template may name (bos_token, eos_token, …), as text. */
  readonly specialTokens: Readonly<Partial<Record<SpecialTokenName, string>>>;
  /** The chat template (Jinja), when the model has one. */
  readonly chatTemplate: ChatTemplate | undefined;
  private readonly hf: JsTokenizer;
  private templateKwargs: Readonly<Record<string, unknown>> = {};

  constructor(spec: TokenizerSpec) {
    this.source = spec.source;
    this.specialTokens = { ...spec.specialTokens };
    let json = withRustParity(spec.json, spec.source);
    if (spec.addBosToken !== undefined || spec.addEosToken !== undefined) {
      const bos = spec.addBosToken ? spec.specialTokens.bos_token : undefined;
      const eos = spec.addEosToken ? spec.specialTokens.eos_token : undefined;
      json = { ...json, post_processor: bosEosPostProcessor(bos, eos, (t) => idInJson(json, t)) };
    }
    try {
      this.hf = new HfTokenizer(json, { ...spec.specialTokens, clean_up_tokenization_spaces: spec.cleanUpTokenizationSpaces ?? false }) as JsTokenizer;
    } catch (error) {
      throw new UnsupportedError(`${spec.source}: @huggingface/tokenizers cannot build this tokenizer: ${(error as Error).message}`);
    }
    decodeByteRunsAsRust(this.hf.decoder);
    const model = this.hf.model;
    if (!model) throw new UnsupportedError(`${spec.source}: the tokenizer has no model`);
    this.vocabSize = model.vocab.length;
    const idOf = (name: SpecialTokenName) => {
      const token = spec.specialTokens[name];
      return token === undefined ? undefined : this.hf.token_to_id(token);
    };
    this.bosTokenId = idOf('bos_token');
    this.eosTokenId = idOf('eos_token');
    this.padTokenId = idOf('pad_token');
    this.chatTemplate = spec.chatTemplate
      ? new ChatTemplate(spec.chatTemplate.text, spec.chatTemplate.origin, { ...spec.specialTokens } as Record<string, string>)
      : undefined;
    this.endOfTurnId = spec.endOfTurnId ?? this.findEndOfTurn() ?? this.eosTokenId;
  }

  private findEndOfTurn(): number | undefined {
    for (const token of END_OF_TURN_TOKENS) {
      const id = this.hf.token_to_id(token);
      if (id !== undefined && (!this.chatTemplate || this.chatTemplate.source.includes(token))) return id;
    }
    return undefined;
  }

  /** Token ids of `text` (special tokens such as BOS added when the tokenizer adds them, unless addSpecialTokens is false). */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new InvalidArgumentError(`encode takes a string, not ${typeof text}`);
    const { ids, tokens } = this.hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true });
    const missing = ids.findIndex((id) => typeof id !== 'number');
    if (missing >= 0)
      throw new UnsupportedError(`${this.source}: the piece ${JSON.stringify(tokens[missing])} of this text has no token and the tokenizer has no unknown token`);
    return ids as number[];
  }

  /** The text of `ids` (special tokens kept unless skipSpecialTokens). */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    for (const id of ids)
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize)
        throw new InvalidArgumentError(`token id ${id} is outside this vocabulary (0 to ${this.vocabSize - 1})`);
    if (ids.length === 0) return '';
    return this.hf.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  /** A token's id, or undefined when the vocabulary lacks it. */
  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  /** An id's token, or undefined when out of range. */
  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /**
   * Variables every render of the chat template gets, as transformers' apply_chat_template
   * takes extra keyword arguments (chat_template_kwargs): e.g. { enable_thinking: false } for
   * Qwen3. A call's own `variables` override them. Names the template is already given
   * (messages, add_generation_prompt, tools, documents) are refused.
   */
  get chatTemplateKwargs(): Readonly<Record<string, unknown>> {
    return this.templateKwargs;
  }

  /** Replaces chatTemplateKwargs (see there); a non-object, a name that is not a Jinja name or a reserved one is an InvalidArgumentError. */
  setChatTemplateKwargs(kwargs: Record<string, unknown>): void {
    if (typeof kwargs !== 'object' || kwargs === null || Array.isArray(kwargs))
      throw new InvalidArgumentError(`chat template kwargs must be an object of variable names to values, not ${JSON.stringify(kwargs)}`);
    for (const key of Object.keys(kwargs)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new InvalidArgumentError(`chat template variable ${JSON.stringify(key)} is not a Jinja name (letters, digits and _)`);
      if (RESERVED_TEMPLATE_VARIABLES.includes(key))
        throw new InvalidArgumentError(`chat template variable '${key}' is set by diffuse itself (${RESERVED_TEMPLATE_VARIABLES.join(', ')} are), so it cannot be passed`);
    }
    if (Object.keys(kwargs).length > 0 && !this.chatTemplate)
      throw new UnsupportedError(`${this.source} has no chat template, so chat template variables (${Object.keys(kwargs).join(', ')}) have nothing to apply to`);
    this.templateKwargs = Object.freeze({ ...kwargs });
  }

  /** The chat rendered as text by the model's template (transformers' apply_chat_template(tokenize=False)). */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.chatTemplate)
      throw new UnsupportedError(
        `${this.source} has no chat template (no chat_template in tokenizer_config.json, chat_template.jinja or the GGUF's tokenizer.chat_template); use an instruction-tuned model that has one`,
      );
    return this.chatTemplate.render(messages, { ...options, variables: { ...this.templateKwargs, ...options.variables } });
  }

  /** The chat's token ids, as transformers' apply_chat_template(tokenize=True): render, then encode without special tokens. */
  encodeChat(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false });
  }

  /**
   * A prompt and a reply to it, split the way the paper's code builds a target: the ids of the
   * chat with the reply as the assistant's turn, minus the ids of the prompt with the generation
   * prompt. So `reply` holds the reply's tokens and whatever the template closes the turn with
   * (ChatML: "<|im_end|>", "\n"). Throws if the prompt's ids are not a prefix of the whole chat's,
   * since then no split is right.
   */
  encodeReply(messages: readonly ChatMessage[], reply: string): { prompt: number[]; reply: number[] } {
    const prompt = this.encodeChat(messages, { addGenerationPrompt: true });
    const full = this.encodeChat([...messages, { role: 'assistant', content: reply }]);
    const at = prompt.findIndex((id, i) => full[i] !== id);
    if (at >= 0 || full.length < prompt.length)
      throw new UnsupportedError(
        `${this.source}: with the reply ${JSON.stringify(reply)} the chat's tokens differ from the prompt's at position ${at >= 0 ? at : full.length}, so the reply's tokens cannot be split off; the chat template renders the prompt differently once a reply follows`,
      );
    return { prompt, reply: full.slice(prompt.length) };
  }
}
