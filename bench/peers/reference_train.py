"""The paper's training algorithm, run the way the paper's code runs it (PyTorch + HF PEFT).

    <pyenv>/bin/python bench/peers/reference_train.py [--task FILE ...] [--steps N]
        [--device cpu|cuda] [--threads N] [--init-adapter DIR] [--out JSON]
    # GPU throughput at a paper model's shapes, random weights, no tokenizer:
    <pyenv>/bin/python bench/peers/reference_train.py --config llama-2-13b --random-init \
        --synthetic baby-names --device cuda --steps 5 --out r.json

A port of the paper's src/search.py (github y0mingzhang/diffuse-distributions, 7170ab0):
`continuous` and `compute_loss`, kept line for line in what they compute. The settings are the
paper's train.py ones: PEFT LoRA r = 4 (lora_alpha = 8 and dropout 0, PEFT's defaults) on
q,k,v,o,gate,up,down; torch AdamW(lr 5e-5, eps 1e-5; betas (0.9, 0.999) and weight decay 0.01
are torch's defaults); batches of 32 targets, each row the prompt's embeddings followed by the
target's, right-padded with EOS and masked out of the loss; loss = sum over targets of
weight x sequence NLL (divided by the number of prompts in the call, which is 1); gradients
accumulated over a prompt's batches, clipped to norm 1.0, one optimizer step per prompt.

Differences, all deliberate:
- Deterministic by default. The paper shuffles prompts and target order every pass and draws one
  response per target at random. The loss is a sum over targets, so target order changes which
  targets share a padded batch but not the gradient (up to float rounding); `--shuffle` does
  what the paper does, seeded. With several responses the draw uses `--seed`.
- The logits are upcast to float32 before the cross-entropy. The paper's model is float32, where
  this does nothing; with --dtype bfloat16 it keeps the loss in float32 like our side.
- --steps counts optimizer steps (prompts), cycling through the tasks as the paper's passes do.
- The model comes from the GGUF (transformers dequantizes it to float32) or, with --random-init,
  from a config of a paper model's shapes with random weights; tokenization of task files is
  tools/reference/reference_stack.py's port of the paper's generate_prompt.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "reference"))

from reference_stack import (  # noqa: E402
    DEFAULT_GGUF,
    REPO_ROOT,
    Prompt,
    dtype_kwarg,
    faithful_tokenizer,
    load_gguf_model,
    load_task,
    package_versions,
    task_alias,
)

TARGET_MODULES = ["q_proj", "o_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R = 4
LORA_ALPHA = 8  # PEFT's default, which the paper's LoraConfig leaves in place

# Shapes of the paper's models (their config.json values); weights are random with --random-init.
CONFIGS = {
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
                       tie_word_embeddings=False),
    "llama-2-13b": dict(model_type="llama", hidden_size=5120, intermediate_size=13824,
                        num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                        vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                        rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
                        tie_word_embeddings=False),
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=32000, max_position_embeddings=32768, rms_norm_eps=1e-5,
                       rope_theta=1000000.0, sliding_window=None, bos_token_id=1,
                       eos_token_id=2, tie_word_embeddings=False),
}


# ---------------------------------------------------------------------------------------------
# Tasks


def default_rng_task() -> Path:
    for base in (REPO_ROOT.parent, REPO_ROOT.parent.parent):
        candidate = base / "shared" / "reference" / "prompts" / "numbers" / "rng-0.json"
        if candidate.is_file():
            return candidate
    raise SystemExit("no --task given and shared/reference/prompts/numbers/rng-0.json not found")


def synthetic_task(kind: str, vocab_size: int, bos_id: int, eos_id: int, seed: int) -> Prompt:
    """A tokenizer-free task with the shape of a real one, for models with random weights.

    Prompt: BOS + 39 random ids (a chat prompt of 40 tokens). Each target is shaped like a
    Llama-2-chat assistant turn " {x} </s>" as the paper's eos=True targets are:
    [open, x..., close, space, eos]. "rng": x = the digits of 1..10 (ten fixed random ids; digits
    split, as Llama's tokenizer does), 10 targets of 5-6 tokens. "baby-names": 200 distinct
    targets with x = 1-3 name pieces (25/50/25 %); the first piece comes 60 % of the time from a
    pool of 52 ids (names share initial pieces, which a prefix trie can exploit), otherwise from
    the whole vocabulary. Ids avoid 0..2 (unk, bos, eos). Weights uniform."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def ids(n: int) -> list[int]:
        return [int(x) for x in rng.integers(3, vocab_size, size=n)]

    prompt = [bos_id] + ids(39)
    open_id, close_id, space_id = ids(3)
    targets: list[list[int]] = []
    if kind == "rng":
        digits = ids(10)
        for k in range(1, 11):
            targets.append([open_id] + [digits[int(c)] for c in str(k)] + [close_id, space_id, eos_id])
    elif kind == "baby-names":
        initials = ids(52)
        seen: set[tuple[int, ...]] = set()
        while len(targets) < 200:
            n = int(rng.choice([1, 2, 3], p=[0.25, 0.5, 0.25]))
            first = initials[int(rng.integers(52))] if rng.random() < 0.6 else ids(1)[0]
            pieces = tuple([first] + ids(n - 1))
            if pieces in seen:
                continue
            seen.add(pieces)
            targets.append([open_id, *pieces, close_id, space_id, eos_id])
    else:
        raise SystemExit(f"unknown synthetic task {kind!r}: use rng or baby-names")
    weights = [1.0 / len(targets)] * len(targets)
    return Prompt(f"synthetic-{kind}", prompt, [[t] for t in targets], weights,
                  [f"#{i}" for i in range(len(targets))], [""], True)


def token_task_json(prompt: Prompt, **meta) -> dict:
    """A tokenized task in a tokenizer-free JSON form both stacks can read."""
    return {
        **meta,
        "alias": prompt.alias,
        "prompt_token_ids": prompt.tokens,
        "targets": [
            {"name": name, "token_ids": enc[0] if len(enc) == 1 else enc, "weight": w}
            for name, enc, w in zip(prompt.target_strings, prompt.targets, prompt.weights)
        ],
    }


def load_token_task(path: Path) -> Prompt:
    data = json.loads(path.read_text())
    targets = [t["token_ids"] for t in data["targets"]]
    targets = [[t] if t and isinstance(t[0], int) else t for t in targets]
    weights = [t["weight"] for t in data["targets"]]
    total = sum(weights)
    return Prompt(data.get("alias", path.name), data["prompt_token_ids"], targets,
                  [w / total for w in weights], [t.get("name", "") for t in data["targets"]],
                  [""], True)


# ---------------------------------------------------------------------------------------------
# The paper's algorithm (src/search.py)


def embed_tokens(model):
    """utils.embed_tokens: the (frozen) input embedding of the base model under PEFT."""
    return model.get_input_embeddings()


def compute_loss(model, pad_id: int, prompts: list[Prompt], device, choose, batch_size: int = 32):
    """search.compute_loss. Returns (loss tensor, positions computed)."""
    import torch
    import torch.nn.functional as F

    loss = torch.tensor(0.0, device=device)
    positions = 0

    for prompt in prompts:
        prompt_embeds = embed_tokens(model)(torch.tensor(prompt.tokens, device=device))

        target_weights = torch.tensor(prompt.weights, dtype=torch.float32, device=device)
        target_tokens = [choose(target) for target in prompt.targets]

        for offset in range(0, len(target_tokens), batch_size):
            target_tokens_batch = target_tokens[offset : offset + batch_size]
            inputs_embeds = []
            target_ids = []
            target_masks = []
            max_len = max(map(len, target_tokens_batch))
            prompt_len = prompt_embeds.shape[0]

            for target in target_tokens_batch:
                pad_len = max_len - len(target)
                ids = torch.tensor(target + [pad_id] * pad_len, dtype=torch.long, device=device)
                target_ids.append(ids)

                embeds = torch.cat((prompt_embeds, embed_tokens(model)(ids)))
                inputs_embeds.append(embeds)

                target_mask = torch.tensor(
                    [1] * len(target) + [0] * pad_len, dtype=torch.float32, device=device
                )
                target_masks.append(target_mask)

            target_ids = torch.stack(target_ids)
            inputs_embeds = torch.stack(inputs_embeds)
            target_masks = torch.stack(target_masks)
            positions += inputs_embeds.shape[0] * inputs_embeds.shape[1]

            outputs = model(inputs_embeds=inputs_embeds)
            logits = outputs.logits[:, prompt_len - 1 : -1, :].float()
            logits = logits.reshape(-1, logits.shape[-1])  # "B S V -> (B S) V"
            token_negative_log_likelihoods = F.cross_entropy(
                logits, target_ids.reshape(-1), reduction="none"
            )
            sequence_negative_log_likelihoods = (
                token_negative_log_likelihoods.reshape(len(target_tokens_batch), -1) * target_masks
            ).sum(1)

            loss_batch = (
                sequence_negative_log_likelihoods * target_weights[offset : offset + batch_size]
            ).sum() / len(prompts)
            loss = loss + loss_batch

    return loss, positions


def logsumexp(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(math.fsum(math.exp(x - top) for x in xs))


def entropy(p) -> float:
    """utils.entropy."""
    import numpy as np

    return float(-np.nansum(p * np.log(p)))


def optimizer_step(model, opt, prompt: Prompt, pad_id: int, device, choose, shuffler,
                   batch_size: int) -> tuple[float, int]:
    """The body of search.continuous's loop over prompts: accumulate over the prompt's target
    batches, clip to 1.0, one AdamW step. Returns (loss, positions)."""
    import torch

    num_targets = len(prompt.targets)
    rand_indices = list(range(num_targets))
    if shuffler is not None:
        shuffler.shuffle(rand_indices)

    loss = 0.0
    positions = 0
    for offset in range(0, num_targets, batch_size):
        chunk = rand_indices[offset : offset + batch_size]
        prompt_fed = Prompt(
            prompt.alias,
            prompt.tokens,
            [prompt.targets[i] for i in chunk],
            [prompt.weights[i] for i in chunk],
        )
        loss_batch, n = compute_loss(model, pad_id, [prompt_fed], device, choose, batch_size)
        loss_batch.backward()
        loss += loss_batch.item()
        positions += n

    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    return loss, positions


def target_logprobs(model, prompt: Prompt, pad_id: int, device, batch_size: int) -> list[list[float]]:
    """log p(response_j + target_i | prompt) for every pair, by the same padded forward as
    compute_loss (no grad); float64 log-softmax of the float32 logits, summed in float64."""
    import torch

    pairs = [(i, j) for i, enc in enumerate(prompt.targets) for j in range(len(enc))]
    out = [[0.0] * len(enc) for enc in prompt.targets]
    embed = embed_tokens(model)
    with torch.no_grad():
        prompt_embeds = embed(torch.tensor(prompt.tokens, device=device))
        p = len(prompt.tokens)
        for offset in range(0, len(pairs), batch_size):
            chunk = pairs[offset : offset + batch_size]
            seqs = [prompt.targets[i][j] for i, j in chunk]
            max_len = max(map(len, seqs))
            ids = torch.tensor([s + [pad_id] * (max_len - len(s)) for s in seqs], device=device)
            inputs = torch.cat((prompt_embeds.unsqueeze(0).expand(len(seqs), -1, -1), embed(ids)), dim=1)
            logits = model(inputs_embeds=inputs).logits[:, p - 1 : -1, :].to(torch.float64)
            logp = torch.log_softmax(logits, dim=-1).gather(2, ids.unsqueeze(-1)).squeeze(-1)
            for row, ((i, j), s) in enumerate(zip(chunk, seqs)):
                out[i][j] = math.fsum(logp[row, : len(s)].tolist())
    return out


# ---------------------------------------------------------------------------------------------
# Model and adapter


def build_model(args, torch):
    """(model, tokenizer or None, eos id, description, tokenizer note) for the GGUF or a
    random-init config."""
    dtype = getattr(torch, args.dtype)
    if args.random_init:
        from transformers import AutoConfig, AutoModelForCausalLM

        shape = dict(CONFIGS[args.config])
        config = AutoConfig.for_model(**shape)
        torch.manual_seed(args.seed)
        with torch.device(args.device):
            model = AutoModelForCausalLM.from_config(config, **dtype_kwarg(dtype))
        model.eval()  # as from_pretrained leaves it; the paper never calls train()
        desc = f"{args.config} shapes, random weights (seed {args.seed})"
        return model, None, shape["eos_token_id"], desc, None
    tokenizer, note = faithful_tokenizer(args.gguf)
    model = load_gguf_model(args.gguf, dtype).to(args.device)
    return model, tokenizer, tokenizer.eos_token_id, f"{args.gguf.name} (transformers, dequantized)", note


def add_lora(model, init_adapter: Path | None):
    from peft import LoraConfig, get_peft_model

    # The paper's LoraConfig: only r and the target modules are set.
    peft_config = LoraConfig(r=LORA_R, target_modules=TARGET_MODULES, task_type="CAUSAL_LM")
    assert peft_config.lora_alpha == LORA_ALPHA and peft_config.lora_dropout == 0.0
    model = get_peft_model(model, peft_config)
    if init_adapter is not None:
        load_adapter_weights(model, init_adapter)
    return model


def load_adapter_weights(model, path: Path) -> None:
    """Overwrite the fresh LoRA A/B with a PEFT-layout safetensors (a file, or a directory with
    adapter_model.safetensors and adapter_config.json). Every LoRA tensor must be present."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    file = path / "adapter_model.safetensors" if path.is_dir() else path
    config_file = file.parent / "adapter_config.json"
    if config_file.is_file():
        cfg = json.loads(config_file.read_text())
        if cfg.get("r") != LORA_R or cfg.get("lora_alpha") != LORA_ALPHA:
            raise SystemExit(f"{config_file}: r={cfg.get('r')} lora_alpha={cfg.get('lora_alpha')}, "
                             f"expected r={LORA_R} lora_alpha={LORA_ALPHA}")
    state = load_file(str(file))
    expected = get_peft_model_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise SystemExit(f"{file}: missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
                         f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise SystemExit(f"{file}: {key} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(expected[key].shape)}")
    set_peft_model_state_dict(model, state)


def evaluate(model, prompts: list[Prompt], eos_id: int, device, batch_size: int, label: str) -> list[dict]:
    """Per prompt: every target's log-prob, the target-set mass, the entropy of the model's
    distribution renormalised over the set, and the loss -sum p* log p."""
    import numpy as np

    out = []
    for prompt in prompts:
        lps = target_logprobs(model, prompt, eos_id, device, batch_size)
        # p(y) = mean over responses of p(response + y | prompt), renormalised over the set
        per_target = [logsumexp(row) - math.log(len(row)) for row in lps]
        top = max(per_target)
        z = math.fsum(math.exp(v - top) for v in per_target)
        q = [math.exp(v - top) / z for v in per_target]
        out.append({
            "prompt": prompt.alias,
            "targets": [{"name": name, "logprob": row if len(row) > 1 else row[0]}
                        for name, row in zip(prompt.target_strings, lps)],
            "target_set_mass": math.fsum(math.exp(v) for v in per_target),
            "entropy_over_targets": -math.fsum(x * math.log(x) for x in q if x > 0),
            "optimal_entropy": entropy(np.array(prompt.weights)),
            "loss": -math.fsum(w * v for w, v in zip(prompt.weights, per_target)),
        })
        print(f"{label} {prompt.alias}: entropy over targets {out[-1]['entropy_over_targets']:.4f} "
              f"(optimal {out[-1]['optimal_entropy']:.4f}), mass {out[-1]['target_set_mass']:.4f}, "
              f"loss {out[-1]['loss']:.4f}")
    return out


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF, help="model (default: SmolLM2 Q4_1)")
    ap.add_argument("--config", choices=sorted(CONFIGS), help="a paper model's shapes (needs --random-init)")
    ap.add_argument("--random-init", action="store_true", help="random weights from --config's shapes")
    ap.add_argument("--task", type=Path, nargs="+", help="task JSON files in the paper's format "
                    "(default: shared/reference/prompts/numbers/rng-0.json)")
    ap.add_argument("--token-task", type=Path, nargs="+", help="tokenized task JSON (--save-task's format)")
    ap.add_argument("--synthetic", choices=["rng", "baby-names"], help="tokenizer-free task (random ids)")
    ap.add_argument("--save-task", type=Path, help="write the tokenized task(s) as JSON here")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps (one per prompt)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                    help="base weights (default: float32 as the paper; bfloat16 with --random-init)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--init-adapter", type=Path, help="PEFT-layout LoRA to start from (dir or file)")
    ap.add_argument("--save-adapter", type=Path, help="save the trained adapter (PEFT layout) here")
    ap.add_argument("--shuffle", action="store_true", help="shuffle prompts and targets each pass, as the paper")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-final-eval", action="store_true", help="skip the final log-probs and entropy")
    ap.add_argument("--initial-eval", action="store_true",
                    help="also record the log-probs and entropy before training (report's 'initial')")
    ap.add_argument("--out", type=Path, help="write the report as JSON here")
    args = ap.parse_args()
    if args.random_init != (args.config is not None):
        ap.error("--config and --random-init go together")
    if args.random_init and args.task:
        ap.error("--random-init has no tokenizer: use --synthetic or --token-task")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.random_init else "float32"

    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notes from PEFT
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    t_load = time.perf_counter()
    model, tokenizer, eos_id, model_desc, tokenizer_note = build_model(args, torch)
    torch.manual_seed(args.seed)  # PEFT draws lora_A (Kaiming-uniform) from torch's global RNG
    model = add_lora(model, args.init_adapter)
    load_s = time.perf_counter() - t_load
    lora_params = [p for p in model.parameters() if p.requires_grad]
    lora_dtypes = sorted({str(p.dtype) for p in lora_params})

    if args.synthetic:
        vocab = model.config.vocab_size
        bos = model.config.bos_token_id if model.config.bos_token_id is not None else 1
        prompts = [synthetic_task(args.synthetic, vocab, bos, eos_id, args.seed)]
    elif args.token_task:
        prompts = [load_token_task(p) for p in args.token_task]
    else:
        paths = args.task or [default_rng_task()]
        prompts = [load_task(tokenizer, p, alias=task_alias(p)) for p in paths]
    if args.save_task:
        args.save_task.write_text(json.dumps(
            [token_task_json(p, model=model_desc, pad_token_id=eos_id) for p in prompts]
            if len(prompts) > 1 else token_task_json(prompts[0], model=model_desc, pad_token_id=eos_id)
        ) + "\n")

    responder = random.Random(args.seed)
    choose = responder.choice  # the paper's random.choice over a target's response encodings
    shuffler = random.Random(args.seed + 1) if args.shuffle else None
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, eps=1e-5)
    optimal_loss = sum(entropy(np.array(p.weights)) for p in prompts)

    initial = evaluate(model, prompts, eos_id, device, args.batch_size, "initial") if args.initial_eval else None

    steps = []
    order: list[Prompt] = []
    for step in range(args.steps):
        if not order:  # a new pass over the prompts, as one of the paper's n_iters
            order = list(prompts)
            if shuffler is not None:
                shuffler.shuffle(order)
        prompt = order.pop(0)
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        c0 = time.process_time()
        loss, positions = optimizer_step(model, opt, prompt, eos_id, device, choose, shuffler,
                                         args.batch_size)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        # CPU seconds of the whole process (all threads): with --threads N, cpu / (N x seconds)
        # is the share of N cores the step got, which shows contention from other processes.
        cpu_seconds = time.process_time() - c0
        steps.append({"step": step, "prompt": prompt.alias, "loss": loss, "seconds": seconds,
                      "cpu_seconds": cpu_seconds, "positions": positions,
                      "positions_per_s": positions / seconds})
        print(f"step {step}: {prompt.alias} loss {loss:.4f} (optimal {entropy(np.array(prompt.weights)):.4f}) "
              f"{seconds:.3f} s, {positions} positions, {positions / seconds:.0f} positions/s")

    final = []
    if not args.no_final_eval:
        final = evaluate(model, prompts, eos_id, device, args.batch_size, "final")

    if args.save_adapter:
        model.save_pretrained(str(args.save_adapter))

    timed = [s["seconds"] for s in steps[1:]] or [s["seconds"] for s in steps]
    report = {
        "algorithm": "paper src/search.py continuous/compute_loss, PEFT LoRA",
        "model": model_desc,
        "tokenizer": tokenizer_note,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "threads": args.threads,
        "dtype": args.dtype,
        "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "target_modules": TARGET_MODULES,
                 "trainable_params": sum(p.numel() for p in lora_params), "dtypes": lora_dtypes,
                 "init": str(args.init_adapter) if args.init_adapter else f"PEFT default (seed {args.seed})"},
        "optimizer": {"name": "torch.optim.AdamW", "lr": 5e-5, "eps": 1e-5, "betas": [0.9, 0.999],
                      "weight_decay": 0.01, "clip_grad_norm": 1.0},
        "batch_size": args.batch_size,
        "shuffle": args.shuffle,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "versions": package_versions(["torch", "transformers", "peft", "numpy"]),
        "load_seconds": load_s,
        "optimal_loss": optimal_loss,
        "steps": steps,
        "median_step_seconds_after_first": statistics.median(timed) if timed else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "initial": initial,
        "final": final,
    }
    if args.device == "cuda":
        report["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated()
        report["peak_cuda_reserved_bytes"] = torch.cuda.max_memory_reserved()
    print((f"median step {statistics.median(timed):.3f} s (after the first), " if timed else "")
          + f"peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB"
          + (f", peak CUDA {report['peak_cuda_allocated_bytes'] / 2**30:.2f} GiB"
             if args.device == "cuda" else ""))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
