"""Tiny random models of each supported family, made by transformers itself, with transformers'
target log-probs: the fixtures of test/model/families.test.ts.

    <pyenv>/bin/python tools/reference/family_fixtures.py --llama-cpp DIR [--out DIR] [--families ...]

For each family (llama, mistral, qwen3, gemma, gemma2, gemma3_text, phi3, and Phi-3's RoPE variants
phi3_longrope and phi4_partial) this builds the model class from a
tiny config (windows of 4 positions, shorter than every test sequence; head dims apart from
hidden / heads where the family allows it), draws every parameter at random — norm weights too,
around 0 for Gemma's (1 + w) norms and around 1 for the others, so a mix-up shows — and writes:

  <out>/<family>/        the Hugging Face directory (config.json, model.safetensors in float32,
                         a byte-level BPE tokenizer.json and the family's chat template)
  <out>/<family>.gguf    the same model converted by llama.cpp's own converter classes
                         (convert_hf_to_gguf.py's conversion/ package in DIR, float32): its Gemma
                         norm shift, Q/K handling, soft-cap and window metadata are the
                         converter's. Only the vocabulary step is replaced (set_vocab writes the
                         gpt2-style token list with the pre-tokenizer named "default"), since the
                         converter identifies real tokenizers by hashing their output.
                         Mistral has none: llama.cpp converts it as 'llama', which has no window.
  <out>/<family>.json    transformers' log-probs of a prompt and a trie of targets given as
                         token ids, and of a reference task through the tokenizer and chat
                         template (apply_chat_template; targets are the tokens of the whole chat
                         after the generation prompt's): each (prompt + target) run alone in
                         float32 with eager attention, log-softmax in float64, summed in float64.
                         qwen3 carries Qwen3's shipped template (its thinking block), rendered
                         with apply_chat_template's defaults and again with enable_thinking=False
                         ("chat.with_kwargs").
  <out>/<family>-lora/   a PEFT LoRA adapter (r 2, alpha 4, on every linear layer under PEFT's
                         module names, A and B random), with the task's log-probs under it in
                         <family>.json ("chat.lora_logprobs"); for phi3 on its fused qkv_proj
                         and gate_up_proj (with o_proj, down_proj), as PEFT names them.
  <out>/<family>-lora.gguf  for the phi* families: that adapter through llama.cpp's
                         convert_lora_to_gguf.py (f32), for the GGUF-LoRA export and import.
  <out>/<family>-bf16/   for gemma2 and qwen3: the same model in bfloat16, sharded into several
                         safetensors files (model.safetensors.index.json), with transformers'
                         log-probs of the bfloat16 weights computed in float32 ("bf16_sharded").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "test" / "fixtures" / "families"

# A prompt and targets sharing prefixes; with the prompt, every sequence is longer than the window.
PROMPT = [5, 71, 33, 120, 9, 250, 64]
TARGETS = [[12, 40], [12, 41, 7], [12, 41, 8, 99], [200, 3, 3, 3, 17, 60], [88], [101, 102, 103, 104, 105]]

COMMON = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              rms_norm_eps=1e-6, max_position_embeddings=64, attention_dropout=0.0)

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# Qwen3's chat template as the Qwen/Qwen3 repositories ship it (tokenizer_config.json of
# Qwen3-0.6B, 8B, 14B): its thinking block — an assistant turn after the last user query renders
# "<think>\n...\n</think>\n\n" before its content, and the generation prompt closes an empty
# one when enable_thinking is false. Reproduced verbatim (no copy was available offline; this is
# the shipped text, checked against a public copy of it).
QWEN3_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}'''

FAMILIES = {
    # Converted as 'llama' with LlamaModel.permute on Q and K, which the loader must undo.
    "llama": dict(cls="LlamaForCausalLM", cfg="LlamaConfig", template=LLAMA2_TEMPLATE, gguf=True,
                  config=dict(head_dim=8, tie_word_embeddings=False, rope_theta=500.0)),
    "mistral": dict(cls="MistralForCausalLM", cfg="MistralConfig", template=MISTRAL_TEMPLATE, gguf=False,
                    config=dict(head_dim=8, sliding_window=4, tie_word_embeddings=False, rope_theta=100.0)),
    # Qwen3's shipped template; <think> and </think> are added (not special) tokens, as in Qwen3's vocabulary.
    "qwen3": dict(cls="Qwen3ForCausalLM", cfg="Qwen3Config", template=QWEN3_TEMPLATE, gguf=True, added_tokens=["<think>", "</think>"],
                  chat_kwargs={"enable_thinking": False},
                  config=dict(head_dim=12, tie_word_embeddings=False, rope_theta=1000.0, attention_bias=False)),
    # The Gemma 1/2 converters write no RoPE base (llama.cpp's default 10000 is Gemma's).
    "gemma": dict(cls="GemmaForCausalLM", cfg="GemmaConfig", template=GEMMA_TEMPLATE, gguf=True,
                  config=dict(head_dim=12, tie_word_embeddings=True, hidden_act="gelu", rope_theta=10000.0)),
    # query_pre_attn_scalar = head_dim: llama.cpp scales Gemma 2/3 queries by 1/sqrt(head_dim).
    "gemma2": dict(cls="Gemma2ForCausalLM", cfg="Gemma2Config", template=GEMMA_TEMPLATE, gguf=True,
                   config=dict(head_dim=8, query_pre_attn_scalar=8, sliding_window=4, attn_logit_softcapping=2.0,
                               final_logit_softcapping=3.0, tie_word_embeddings=True, rope_theta=10000.0)),
    # Six layers so llama.cpp's fixed pattern (5 windowed, 1 global) is transformers' default too.
    "gemma3_text": dict(cls="Gemma3ForCausalLM", cfg="Gemma3TextConfig", template=GEMMA_TEMPLATE, gguf=True,
                        config=dict(head_dim=8, query_pre_attn_scalar=8, sliding_window=4, num_hidden_layers=6,
                                    tie_word_embeddings=True,
                                    rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
                                                     "sliding_attention": {"rope_type": "default", "rope_theta": 10.0}})),
    # Fused qkv_proj and gate_up_proj, kept fused by the converter (attn_qkv, ffn_up); a window.
    "phi3": dict(cls="Phi3ForCausalLM", cfg="Phi3Config", template=PHI3_TEMPLATE, gguf=True,
                 lora=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
                 config=dict(sliding_window=4, tie_word_embeddings=False, rope_theta=10000.0, resid_pdrop=0.0, embd_pdrop=0.0,
                             original_max_position_embeddings=64)),
    # Phi-3.5-mini's LongRoPE: short != long factors per frequency. original_max_position_embeddings
    # 12 falls among the token-id test sequences (8 to 13 positions): transformers takes the short
    # factors for those of 8 to 12 positions and the long ones for the 13-position one (its last
    # token, which has no row of its own in a trie, is what puts it over) and for the chat
    # template's (140 and more), with its default attention factor sqrt(1 + ln(64/12) / ln 12).
    "phi3_longrope": dict(cls="Phi3ForCausalLM", cfg="Phi3Config", template=PHI3_TEMPLATE, gguf=True,
                          lora=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
                          config=dict(sliding_window=None, tie_word_embeddings=False, rope_theta=10000.0, resid_pdrop=0.0,
                                      embd_pdrop=0.0, max_position_embeddings=64, original_max_position_embeddings=12,
                                      rope_scaling={"type": "longrope", "short_factor": [1.0, 1.3, 2.1, 4.5],
                                                    "long_factor": [1.2, 3.0, 9.0, 31.0]})),
    # Phi-4-mini: partial_rotary_factor 0.75 (12 of 16 dims per head), LongRoPE, tied embeddings.
    # Every test sequence is within original_max_position_embeddings 256: the short factors.
    "phi4_partial": dict(cls="Phi3ForCausalLM", cfg="Phi3Config", template=PHI3_TEMPLATE, gguf=True,
                         lora=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
                         config=dict(hidden_size=64, sliding_window=None, tie_word_embeddings=True, rope_theta=10000.0,
                                     resid_pdrop=0.0, embd_pdrop=0.0, max_position_embeddings=1024,
                                     original_max_position_embeddings=256, partial_rotary_factor=0.75,
                                     rope_scaling={"type": "longrope", "short_factor": [1.0, 1.4, 2.5, 6.0, 13.0, 30.0],
                                                   "long_factor": [1.1, 2.0, 4.0, 9.0, 27.0, 64.0]})),
}

SPECIALS = ["<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>",
            "<|assistant|>", "<|end|>"]


def byte_level_tokenizer(out: Path, template: str, added: list[str]) -> int:
    """A byte-level BPE tokenizer without merges (the 256 byte symbols) plus special tokens and
    the family's added tokens; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.add_tokens(added)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    fast.chat_template = template
    fast.save_pretrained(out)
    return len(vocab) + len(SPECIALS) + len(added)


def randomize(model, gemma_norms: bool, seed: int) -> None:
    """Every parameter at random: matrices N(0, 1/in), embeddings N(0, 0.5^2) (Gemma: scaled by
    sqrt(d) later, so N(0, 0.1^2)), norms N(0, 0.3^2) around 0 for (1 + w) norms, around 1 else."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_((0.0 if gemma_norms else 1.0) + 0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_((0.1 if gemma_norms else 0.5) * torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def target_logprobs(model, prompt: list[int], target: list[int]) -> list[float]:
    import torch

    ids = torch.tensor([prompt + target], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    p = len(prompt)
    rows = logits[p - 1 : p - 1 + len(target)].to(torch.float64)
    logp = torch.log_softmax(rows, dim=-1)
    return logp[torch.arange(len(target)), torch.tensor(target)].tolist()


def chat_fixture(model, tokenizer, task: Path, kwargs: dict | None = None) -> dict:
    """apply_chat_template's defaults, or with `kwargs` (its chat_template_kwargs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reference_stack import chat_ids

    data = json.loads(task.read_text())
    user = [{"content": data["request"], "role": "user"}]
    prompt = chat_ids(tokenizer, user, add_generation_prompt=True, **(kwargs or {}))
    targets = []
    for target in data["targets"]:
        full = chat_ids(tokenizer, user + [{"content": data["response"][0] + target, "role": "assistant"}], **(kwargs or {}))
        assert full[: len(prompt)] == prompt
        ids = full[len(prompt) :]
        lps = target_logprobs(model, prompt, ids)
        targets.append({"target": target, "token_ids": ids, "logprob": math.fsum(lps)})
    return {"file": str(task.relative_to(REPO_ROOT / "data" / "tasks" / "reference" / "prompts")), "prompt_token_ids": prompt,
            "targets": targets}


LLAMA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peft_adapter(model, out: Path, seed: int, modules: list[str]):
    """A PEFT LoRA on every linear layer with random A and B (B is zero at PEFT's init, which
    would test nothing), saved in float32; returns the wrapped model."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        target_modules=modules)
    peft_model = get_peft_model(model, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    peft_model.eval()
    peft_model.save_pretrained(out, safe_serialization=True)
    (out / "README.md").unlink(missing_ok=True)  # PEFT's model-card template
    return peft_model


def convert_to_gguf(llama_cpp: Path, hf_dir: Path, out: Path) -> None:
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    sys.path.insert(0, str(llama_cpp))
    import gguf
    from conversion import ModelBase, get_model_architecture, get_model_class  # type: ignore
    from conversion.base import ModelType  # type: ignore

    hparams = ModelBase.load_hparams(hf_dir, False)
    cls = get_model_class(get_model_architecture(hparams, ModelType.TEXT), mmproj=False)

    class TinyVocab(cls):  # type: ignore[misc, valid-type]
        model_arch = cls.model_arch

        def set_vocab(self):
            self._set_vocab_gpt2()

        def get_vocab_base_pre(self, tokenizer) -> str:
            return "default"

    model = TinyVocab(hf_dir, gguf.LlamaFileType.ALL_F32, out, eager=True)
    model.write()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", type=Path, required=True, help="a llama.cpp checkout (convert_hf_to_gguf.py, conversion/, gguf-py/)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    args = ap.parse_args()

    import torch
    import transformers

    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    for family in args.families:
        spec = FAMILIES[family]
        hf_dir = args.out / family
        vocab = byte_level_tokenizer(hf_dir, spec["template"], spec.get("added_tokens", []))
        cfg = getattr(transformers, spec["cfg"])(**{**COMMON, "vocab_size": vocab, "bos_token_id": 257, "eos_token_id": 258,
                                                    "pad_token_id": 256, **spec["config"]})
        cfg._attn_implementation = "eager"
        model = getattr(transformers, spec["cls"])(cfg).eval()
        randomize(model, family.startswith("gemma"), seed=1000 + list(FAMILIES).index(family))
        model.save_pretrained(hf_dir, safe_serialization=True)
        targets = []
        for t in TARGETS:
            lps = target_logprobs(model, PROMPT, t)
            targets.append({"token_ids": t, "token_logprobs": lps, "logprob": math.fsum(lps)})
        from transformers import AutoTokenizer

        task = REPO_ROOT / "data" / "tasks" / "reference" / "prompts" / "numbers" / "rng-0.json"
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        chat = chat_fixture(model, tokenizer, task)
        if "chat_kwargs" in spec:
            chat["with_kwargs"] = {"kwargs": spec["chat_kwargs"], **chat_fixture(model, tokenizer, task, spec["chat_kwargs"])}
        if spec["gguf"]:
            convert_to_gguf(args.llama_cpp, hf_dir, args.out / f"{family}.gguf")
        tuned = peft_adapter(model, args.out / f"{family}-lora", seed=2000 + list(FAMILIES).index(family),
                             modules=spec.get("lora", LLAMA_MODULES))
        chat["lora_logprobs"] = [t["logprob"] for t in chat_fixture(tuned, tokenizer, task)["targets"]]
        if family.startswith("phi"):
            # llama.cpp's own LoRA converter on PEFT's adapter of the fused layers.
            subprocess.run([sys.executable, str(args.llama_cpp / "convert_lora_to_gguf.py"), "--base", str(hf_dir), "--outtype", "f32",
                            "--outfile", str(args.out / f"{family}-lora.gguf"), str(args.out / f"{family}-lora")], check=True,
                           env={**os.environ, "PYTHONPATH": str(args.llama_cpp / "gguf-py")})
        fixture = {
            "family": family,
            "made_by": {"transformers": transformers.__version__, "torch": torch.__version__,
                        "script": "tools/reference/family_fixtures.py"},
            "prompt_token_ids": PROMPT,
            "targets": targets,
            "chat": chat,
            "gguf": f"{family}.gguf" if spec["gguf"] else None,
        }
        if family in ("gemma2", "qwen3"):
            cls = getattr(transformers, spec["cls"])
            bf16_dir = args.out / f"{family}-bf16"
            shutil.rmtree(bf16_dir, ignore_errors=True)
            cls.from_pretrained(hf_dir, dtype=torch.float32).to(torch.bfloat16).save_pretrained(bf16_dir, max_shard_size="20KB")
            widened = cls.from_pretrained(bf16_dir, dtype=torch.float32, attn_implementation="eager").eval()
            fixture["bf16_sharded"] = {"dir": f"{family}-bf16", "logprobs": [math.fsum(target_logprobs(widened, PROMPT, t)) for t in TARGETS]}
            for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
                (bf16_dir / name).unlink(missing_ok=True)
        (args.out / f"{family}.json").write_text(json.dumps(fixture, indent=1) + "\n")
        print(family, "vocab", vocab, "logprobs", [round(t["logprob"], 3) for t in targets])


if __name__ == "__main__":
    main()
