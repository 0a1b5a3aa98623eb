"""llama.cpp prompt processing (prefill) speed on the default GGUF, to set beside ours.

    <pyenv>/bin/python bench/peers/llamacpp_prompt.py [--gguf FILE] [--threads 2]
        [--lengths 64 256 512] [--repeats 10] [--out JSON]

What is timed: one llama_decode of an L-token prompt into an empty KV cache (llama-cpp-python's
Llama.eval after reset(), which clears the cache), i.e. llama-bench's ppL. Every run computes
the logits of the last position only, as a prompt prefill does. Token ids are a fixed
pseudo-random sequence of ordinary (non-control) vocabulary ids, seeded, so both sides can use
the same ones (the ids are in the JSON); prefill cost does not depend on which ids they are.

Each length gets one untimed warm-up run, then --repeats timed runs. Reported per length:
median, min, max and interquartile range of tokens/s over the runs. On a shared 2-core
machine the spread is real: compare ours and this side by side in one session.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

DIFFUSE_HOME = Path(os.environ.get("DIFFUSE_HOME", Path.home() / ".cache" / "diffuse"))
DEFAULT_GGUF = DIFFUSE_HOME / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def prompt_ids(llm, length: int, seed: int) -> list[int]:
    """`length` ordinary-token ids drawn with a fixed seed (control tokens excluded)."""
    import numpy as np
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llm.n_vocab()
    ordinary = [t for t in range(n_vocab)
                if llama_cpp.llama_vocab_get_attr(vocab, t) & llama_cpp.LLAMA_TOKEN_ATTR_NORMAL]
    rng = np.random.default_rng(seed)
    return [int(ordinary[i]) for i in rng.integers(0, len(ordinary), size=length)]


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 512])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    import llama_cpp
    from llama_cpp import Llama

    longest = max(args.lengths)
    llm = Llama(
        str(args.gguf),
        n_ctx=longest,
        n_batch=longest,
        n_ubatch=longest,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=False,
        verbose=False,
    )
    results = []
    for length in args.lengths:
        ids = prompt_ids(llm, length, args.seed)
        llm.reset()
        llm.eval(ids)  # warm-up: page in weights, size buffers
        wall = []
        for _ in range(args.repeats):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            wall.append(time.perf_counter() - t0)
        tps = [length / s for s in wall]
        q1, q3 = quartiles(tps)
        row = {
            "prompt_tokens": length,
            "tokens_per_s": {"median": statistics.median(tps), "min": min(tps), "max": max(tps),
                             "q1": q1, "q3": q3},
            "ms_per_run": {"median": 1000 * statistics.median(wall), "all": [1000 * s for s in wall]},
            "prompt_token_ids": ids,
        }
        results.append(row)
        print(f"pp{length}: {row['tokens_per_s']['median']:8.1f} tok/s median "
              f"(min {min(tps):.1f}, max {max(tps):.1f}, IQR {q1:.1f}-{q3:.1f}) "
              f"over {args.repeats} runs")

    report = {
        "bench": "llama.cpp prompt processing (prefill)",
        "model": str(args.gguf),
        "threads": args.threads,
        "repeats": args.repeats,
        "seed": args.seed,
        "n_ubatch": longest,
        "llama_cpp_python": version("llama-cpp-python"),
        "system_info": llama_cpp.llama_print_system_info().decode(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": sys.version.split()[0]},
        "caveat": "timings on shared cores are noisy; compare side by side in one session",
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
