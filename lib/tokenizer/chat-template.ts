/**
 * Chat templates: the Jinja template a model's tokenizer carries, rendered with @huggingface/jinja
 * the way transformers renders it (trim_blocks and lstrip_blocks on, `messages`,
 * `add_generation_prompt` and the named special tokens as variables, `raise_exception` built in).
 */
import { Template } from '@huggingface/jinja';

import { InvalidArgumentError, ModelFormatError } from '../errors.js';

/** One turn of a chat, as chat templates take it. */
export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** End with the header of an assistant turn, ready for the model's reply (transformers' add_generation_prompt). */
  addGenerationPrompt?: boolean;
  /**
   * More template variables, as transformers passes apply_chat_template's extra keyword
   * arguments (chat_template_kwargs): e.g. { enable_thinking: false } for Qwen3's template.
   */
  variables?: Record<string, unknown>;
}

export class ChatTemplate {
  private readonly template: Template;

  /**
   * @param source the template text
   * @param origin where it came from (a file and key), for error messages
   * @param specialTokens the named special tokens (bos_token, eos_token, …) the template may use
   */
  constructor(
    readonly source: string,
    readonly origin: string,
    private readonly specialTokens: Record<string, string>,
  ) {
    try {
      this.template = new Template(source);
    } catch (error) {
      throw new ModelFormatError(origin, 'chat template', `does not parse as Jinja: ${(error as Error).message}`);
    }
  }

  render(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    for (const [i, m] of messages.entries())
      if (typeof m?.role !== 'string' || typeof m.content !== 'string')
        throw new InvalidArgumentError(`chat message ${i} must have a string role and a string content`);
    try {
      return this.template.render({
        ...this.specialTokens,
        ...(options.variables as Record<string, never> | undefined),
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: options.addGenerationPrompt ?? false,
      });
    } catch (error) {
      throw new InvalidArgumentError(`the chat template of ${this.origin} rejected these messages: ${(error as Error).message}`);
    }
  }
}
