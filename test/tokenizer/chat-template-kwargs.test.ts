/**
 * Extra chat-template variables, as transformers' apply_chat_template passes its keyword
 * arguments: Qwen3's template (its generation-prompt tail, verbatim) opens an empty thinking
 * block only when enable_thinking is false, and leaves it to the model otherwise (the default).
 */
import { ChatTemplate } from '../../lib/tokenizer/chat-template.js';

const qwen3Tail = `{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}`;

describe('chat template variables (chat_template_kwargs)', () => {
  const template = new ChatTemplate(qwen3Tail, 'qwen3 test template', { eos_token: '<|im_end|>' });
  const user = [{ role: 'user', content: 'Pick a number.' }];

  it("follows the template's default when not given (Qwen3: thinking on)", () => {
    expect(template.render(user, { addGenerationPrompt: true })).toBe('<|im_start|>user\nPick a number.<|im_end|>\n<|im_start|>assistant\n');
  });

  it('passes enable_thinking: false through to the template', () => {
    expect(template.render(user, { addGenerationPrompt: true, variables: { enable_thinking: false } })).toBe(
      '<|im_start|>user\nPick a number.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
    );
    expect(template.render(user, { addGenerationPrompt: true, variables: { enable_thinking: true } })).toBe(template.render(user, { addGenerationPrompt: true }));
  });
});
