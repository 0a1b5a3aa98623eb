/**
 * Every error branch of target-set preparation, on a real tokenizer (the tiny SentencePiece
 * fixture with its Llama-2 chat template, and a ChatML-like template of our own whose
 * generation header the full chat does not extend): each is a TargetSetError (code TASK) that
 * names the prompt and says what to do; duplicates are merged with a warning, weights summed.
 */
import { readGguf } from '../../lib/formats/gguf.js';
import { preparePrompt, TargetSetError } from '../../lib/targets/target-set.js';
import { Tokenizer, tokenizerSpecFromGguf } from '../../lib/tokenizer/index.js';

let llama2: Tokenizer;
let headerMismatch: Tokenizer;
beforeAll(async () => {
  const spec = tokenizerSpecFromGguf(await readGguf(new URL('../fixtures/tokenizer/tiny-spm.gguf', import.meta.url).pathname));
  llama2 = new Tokenizer(spec);
  // The generation header ends in a newline the assistant's turn never has.
  const text = "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[U] ' + m['content'] }}{% else %}{{ '[A] ' + m['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '[A]\\n' }}{% endif %}";
  headerMismatch = new Tokenizer({ ...spec, chatTemplate: { text, origin: 'a test template' } });
});

const failure = (tokenizer: Tokenizer, request: object, index = 3) => {
  try {
    preparePrompt(tokenizer, request as never, index);
  } catch (error) {
    expect(error).toBeInstanceOf(TargetSetError);
    expect((error as TargetSetError).code).toBe('TASK');
    return (error as Error).message;
  }
  throw new Error('prepared without an error');
};

describe('target-set preparation', () => {
  it('refuses targets that tokenise identically (the template strips them), naming both', () => {
    expect(failure(llama2, { request: 'Pick one', targets: ['{1}', '{2}', '{1} '] })).toBe('prompt 3: "{1}" and "{1} " tokenise to the same tokens, so the model cannot tell them apart; merge them');
  });

  it('refuses a template whose full chat does not extend its generation prompt', () => {
    expect(failure(headerMismatch, { request: 'Pick one', targets: ['{1}', '{2}'] })).toMatch(/^prompt 3: the chat template does not extend the generation prompt when the assistant answers "\{1\}", so target tokens cannot be taken as a suffix/);
  });

  it('refuses an empty target list, an empty target and a set that is not prefix-free', () => {
    expect(failure(llama2, { request: 'Pick one', targets: [] })).toMatch(/^prompt 3 \("Pick one"\): the target list is empty; give at least one target$/);
    expect(failure(llama2, { request: 'Pick one' })).toMatch(/the target list is empty/);
    expect(failure(llama2, { request: 'Pick one', targets: ['{1}', ''], eos: false })).toBe('prompt 3: target "" has no tokens');
    expect(failure(llama2, { request: 'Pick one', targets: ['{1}', '{1}}'], eos: false })).toBe(
      'prompt 3: the set is not prefix-free: "{1}" is a prefix of "{1}}", so p("{1}") can never equal p("{1}}"); set "eos": true to end every target with the end-of-turn token',
    );
    // With the end-of-turn token the same set is fine.
    expect(preparePrompt(llama2, { request: 'Pick one', targets: ['{1}', '{1}}'] }).sequences).toHaveLength(2);
  });

  it('refuses malformed requests, targets, responses and weights, saying what to give', () => {
    expect(failure(llama2, { targets: ['a'] })).toBe("prompt 3: 'request' must be a string");
    expect(failure(llama2, { request: 'r', targets: ['a', 7] })).toBe('prompt 3: target 1 must be a string');
    expect(failure(llama2, { request: 'r', targets: ['a'], response: [] })).toBe("prompt 3: 'response' must be a string or a non-empty list of strings");
    expect(failure(llama2, { request: 'r', targets: ['a', 'b'], weights: [1] })).toBe('prompt 3: 1 weights given for 2 targets; give one weight per target or none');
    expect(failure(llama2, { request: 'r', targets: ['a', 'b'], weights: [1, -1] })).toBe('prompt 3: weight 1 (-1) for target "b" must be a finite number ≥ 0');
    expect(failure(llama2, { request: 'r', targets: ['a', 'b'], weights: [1, NaN] })).toMatch(/weight 1 \(NaN\)/);
    expect(failure(llama2, { request: 'r', targets: ['a', 'b'], weights: [0, 0] })).toBe('prompt 3: all weights are zero; at least one target needs a positive weight');
  });

  it('merges duplicate targets, summing their weights, and says so', () => {
    const warnings: string[] = [];
    const p = preparePrompt(llama2, { request: 'Pick one', targets: ['{1}', '{2}', '{1}'], weights: [1, 2, 1] }, 5, { warn: (m) => warnings.push(m) });
    expect(p.targets).toEqual(['{1}', '{2}']);
    expect(p.weights).toEqual([0.5, 0.5]);
    expect(warnings).toEqual(['prompt 5: target "{1}" appears more than once; its weights were merged']);
  });
});
