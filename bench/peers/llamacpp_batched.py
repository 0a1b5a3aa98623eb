"""llama.cpp batched decoding on the default GGUF, to set beside `diffuse generate`'s.

    <pyenv>/bin/python bench/peers/llamacpp_batched.py --prompt-ids IDS.json [--gguf FILE]
        [--threads 2] [--batches 1 8 64 256] [--tokens 32] [--repeats 1] [--out JSON]

As llama.cpp's examples/batched does it: the prompt is decoded once with every token in all B
sequences (one KV cell per prompt token, shared by the B sequences, never copied), then each
step decodes one token per sequence in one llama_batch of B tokens, and each sequence's next
token is drawn by llama.cpp's sampler chain (temperature 1, then dist) from its logits. Every
sequence generates exactly --tokens tokens (end of sequence is not a stop), so both sides decode
the same number of tokens. Reported per B: the prefill seconds, the decode seconds and decoded
tokens per second (B · tokens / decode seconds), median over --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from importlib.metadata import version
from pathlib import Path

DIFFUSE_HOME = Path(os.environ.get("DIFFUSE_HOME", Path.home() / ".cache" / "diffuse"))
DEFAULT_GGUF = DIFFUSE_HOME / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def run(model, prompt: list[int], B: int, tokens: int, threads: int, seed: int):
    import llama_cpp as lc

    P = len(prompt)
    params = lc.llama_context_default_params()
    params.n_ctx = P + B * tokens + 16
    params.n_batch = max(P, B)
    params.n_ubatch = max(P, B)
    params.n_seq_max = B
    params.n_threads = threads
    params.n_threads_batch = threads
    params.kv_unified = True
    ctx = lc.llama_init_from_model(model, params)
    chains = []
    for i in range(B):
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(1.0))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed + i))
        chains.append(chain)
    batch = lc.llama_batch_init(max(P, B), 0, B)
    try:
        t0 = time.perf_counter()
        batch.n_tokens = P
        for j, tok in enumerate(prompt):
            batch.token[j] = tok
            batch.pos[j] = j
            batch.n_seq_id[j] = B
            for s in range(B):
                batch.seq_id[j][s] = s
            batch.logits[j] = j == P - 1
        assert lc.llama_decode(ctx, batch) == 0
        prefill = time.perf_counter() - t0
        last = [P - 1] * B  # the logits index each sequence samples from
        t1 = time.perf_counter()
        for step in range(tokens):
            nxt = [lc.llama_sampler_sample(chains[s], ctx, last[s]) for s in range(B)]
            batch.n_tokens = B
            for s in range(B):
                batch.token[s] = nxt[s]
                batch.pos[s] = P + step
                batch.n_seq_id[s] = 1
                batch.seq_id[s][0] = s
                batch.logits[s] = True
            assert lc.llama_decode(ctx, batch) == 0
            last = list(range(B))
        decode = time.perf_counter() - t1
    finally:
        lc.llama_batch_free(batch)
        for c in chains:
            lc.llama_sampler_free(c)
        lc.llama_free(ctx)
    return prefill, decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--prompt-ids", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import llama_cpp as lc
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp's own log: errors only
    prompt = json.loads(args.prompt_ids.read_text())
    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    model = lc.llama_model_load_from_file(str(args.gguf).encode(), mparams)
    run(model, prompt, 1, 4, args.threads, args.seed)  # warm-up: page the weights in
    rows = []
    for B in args.batches:
        runs = [run(model, prompt, B, args.tokens, args.threads, args.seed) for _ in range(args.repeats)]
        decode = statistics.median(r[1] for r in runs)
        row = {"batch": B, "prefill_s": statistics.median(r[0] for r in runs), "decode_s": decode,
               "tokens_per_s": B * args.tokens / decode, "runs_decode_s": [r[1] for r in runs]}
        rows.append(row)
        print(f"llama.cpp B={B:4d}: {row['tokens_per_s']:8.1f} tokens/s decoding", flush=True)
    lc.llama_model_free(model)
    report = {"bench": "llama.cpp batched decode", "model": str(args.gguf), "threads": args.threads,
              "tokens_per_sample": args.tokens, "prompt_tokens": len(prompt),
              "llama_cpp_python": version("llama-cpp-python"),
              "system_info": lc.llama_print_system_info().decode(),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()}, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
