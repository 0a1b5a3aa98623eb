"""The paper's stack (PyTorch + HF transformers + PEFT) set up the way its code sets it up.

Shared by tools/reference/target_logprobs.py and bench/peers/reference_train.py. The target
construction below is a port of `src/utils.py::generate_prompt` from the paper's repository
(github y0mingzhang/diffuse-distributions, commit 7170ab0), kept line for line where it matters;
the only additions are assertions and the handling of transformers 5's return types.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

# transformers' GGUF loader draws its own tqdm bars; these are batch tools, keep logs readable.
os.environ.setdefault("TQDM_DISABLE", "1")

DIFFUSE_HOME = Path(os.environ.get("DIFFUSE_HOME", Path.home() / ".cache" / "diffuse"))
DEFAULT_GGUF = DIFFUSE_HOME / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO_ROOT = Path(__file__).resolve().parents[2]

# SmolLM2's own tokenizer.json (HuggingFaceTB/SmolLM2-135M-Instruct) pre-tokenizes with
#   Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, trim_offsets=True,
#   use_regex=True)]
# and llama.cpp names that pre-tokenizer "smollm" (tokenizer.ggml.pre). transformers' GGUF
# converter builds a plain GPT-2 ByteLevel pre-tokenizer for every BPE GGUF and drops the digit
# split, so for "smollm" files we put the original pre-tokenizer back (see faithful_tokenizer).
SMOLLM_PRE = "smollm"


def package_versions(names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - a package that is absent is reported as such
            out[name] = "not installed"
    return out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_string(path: Path, key: str) -> str | None:
    """One string field of a GGUF header (None when absent), read with the gguf package."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    f = reader.fields.get(key)
    if f is None:
        return None
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def faithful_tokenizer(gguf_path: Path):
    """transformers' tokenizer for a GGUF file, made to match the model's original tokenizer.

    Returns (tokenizer, note): note says what was changed and why (or that nothing was)."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    pre = gguf_string(gguf_path, "tokenizer.ggml.pre")
    if pre != SMOLLM_PRE:
        return tokenizer, f"tokenizer.ggml.pre = {pre!r}: transformers' GGUF tokenizer used as is"
    backend = tokenizer.backend_tokenizer
    model = json.loads(backend.to_str())["model"]
    expected = {"type": "BPE", "byte_fallback": False, "ignore_merges": False, "unk_token": None}
    wrong = {k: model.get(k) for k, v in expected.items() if model.get(k) != v}
    if wrong:
        raise RuntimeError(f"unexpected BPE settings from transformers' GGUF converter: {wrong}")
    before = backend.pre_tokenizer.__getstate__()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    note = (
        "tokenizer.ggml.pre = 'smollm'. transformers' GGUF converter gave the pre-tokenizer "
        f"{before.decode() if isinstance(before, bytes) else before}; it was replaced by SmolLM2's "
        "original Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, "
        "trim_offsets=True, use_regex=True)] (vocab, merges, special tokens and chat template are "
        "the GGUF's, unchanged)"
    )
    return tokenizer, note


def dtype_kwarg(dtype) -> dict:
    """transformers >= 4.56 names the weights' dtype `dtype`; older ones `torch_dtype` (the GPU
    machines may carry an older install than our pinned one)."""
    from transformers import __version__

    major, minor = (int(x) for x in __version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype}


def load_gguf_model(gguf_path: Path, dtype):
    """The GGUF's weights dequantized by transformers into a torch model of `dtype`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, **dtype_kwarg(dtype)
    )
    model.eval()
    return model


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False, **kwargs) -> list[int]:
    """apply_chat_template(tokenize=True) as token ids (transformers 5 returns a BatchEncoding);
    kwargs are the template's extra variables (chat_template_kwargs, e.g. enable_thinking)."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, **kwargs
    )
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


@dataclass
class Prompt:
    """As in the paper's utils.py: targets[i][j] = token ids of target i after response j."""

    alias: str
    tokens: list[int]
    targets: list[list[list[int]]]
    weights: list[float]
    # Not in the paper's dataclass; kept so that reports can name what each entry was.
    target_strings: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    eos: bool = True


def generate_prompt(
    tokenizer,
    alias: str,
    request: str,
    response: str | list[str],
    targets: list[str],
    weights: list[float] | None = None,
    eos: bool = True,
) -> Prompt:
    """Port of the paper's utils.generate_prompt (same defaults: eos=True, uniform weights)."""
    if isinstance(response, str):
        response = [response]
    assert isinstance(response, list) and isinstance(response[0], str)

    tokens = chat_ids(tokenizer, [{"content": request, "role": "user"}], add_generation_prompt=True)
    targets_encodings = []
    for target in targets:
        if "Mistral-7B-Instruct" in (tokenizer.name_or_path or ""):
            # the paper's workaround: otherwise [/INST]{1} tokenizes as [/ | INST | ]{ | 1 | }
            target = " " + target

        target_encodings = []
        for resp in response:
            full_encoding = chat_ids(
                tokenizer,
                [
                    {"content": request, "role": "user"},
                    {"content": resp + target, "role": "assistant"},
                ],
            )
            # Implicit in the paper's slicing: the generation prompt is a prefix of the full chat.
            assert full_encoding[: len(tokens)] == tokens, (alias, target)

            if eos:
                if type(tokenizer).__name__.startswith("Gemma"):
                    # the paper: Gemma ends turns with <end_of_turn>\n but generates <eos>
                    assert full_encoding[-2:] == [107, 108]
                    target_encodings.append(full_encoding[len(tokens) : -2] + [1])
                else:
                    target_encodings.append(full_encoding[len(tokens) :])
            else:
                target_encoding = tokenizer.encode(resp + target, add_special_tokens=False)
                assert all(a == b for a, b in zip(tokens + target_encoding, full_encoding))
                target_encodings.append(target_encoding)
        targets_encodings.append(target_encodings)

    if not weights:
        weights = [1.0 / len(targets) for _ in range(len(targets))]
    else:
        weights_sum = sum(weights)
        weights = [w / weights_sum for w in weights]

    return Prompt(alias, tokens, targets_encodings, weights, list(targets), list(response), eos)


def load_task(tokenizer, path: Path, alias: str | None = None) -> Prompt:
    """A task JSON in the paper's format, tokenized as its find_and_generate_prompts does."""
    with open(path) as f:
        data = json.load(f)
    return generate_prompt(tokenizer, alias or str(path), **data)


def task_alias(path: Path) -> str:
    """The path relative to the reference prompts folder (e.g. numbers/rng-0.json) when it is
    inside one, else the file name."""
    parts = path.resolve().parts
    if "prompts" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("prompts") :])
    return path.name
