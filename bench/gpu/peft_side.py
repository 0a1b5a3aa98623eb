"""Stage 4 of bench/gpu/run.sh: transformers + PEFT beside diffuse on the same GPU, shapes and ids.

    python bench/gpu/peft_side.py reference --results DIR [--steps N]
        writes DIR/task-rng.{json,txt}, DIR/task-baby-names.{json,txt} (the two synthetic tasks of
        bench/peers/reference_train.py, as token ids: JSON for it, the plain text of
        cuda/check's TokenTask for diffuse_cuda_check) and DIR/peft.json (the paper's
        algorithm on Llama-2-13B shapes, random bf16 weights, PEFT LoRA r = 4 on all seven
        modules, N optimiser steps per task, alternating tasks)
    python bench/gpu/peft_side.py compare --results DIR
        reads DIR/peft.json and DIR/*-side-by-side.json (diffuse_cuda_check --token-task
        on the same task files) and writes DIR/side-by-side.json: per task, both stacks'
        median optimiser step and the speed-up (target >= 10x)

Needs torch (with CUDA), transformers, peft and numpy; no tokenizer, no network, no Node.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "peers"))
sys.path.insert(0, str(REPO / "tools" / "reference"))

TASKS = ["rng", "baby-names"]


def token_task_text(task: dict) -> str:
    """cuda/check's TokenTask format (see check.h)."""
    lines = ["diffuse-token-task 1", f"name synthetic-{task['alias'].removeprefix('synthetic-')}",
             "prompt " + " ".join(str(x) for x in [len(task["prompt_token_ids"])] + task["prompt_token_ids"])]
    for t in task["targets"]:
        ids = t["token_ids"]
        if ids and not isinstance(ids[0], int):
            raise SystemExit("a task with several response encodings per target has no TokenTask form")
        lines.append(f"target {t['weight']!r} {len(ids)} " + " ".join(str(x) for x in ids))
    return "\n".join(lines) + "\n"


def reference(args) -> None:
    from reference_train import CONFIGS, synthetic_task, token_task_json

    shape = CONFIGS["llama-2-13b"]
    paths = []
    for kind in TASKS:
        prompt = synthetic_task(kind, shape["vocab_size"], shape["bos_token_id"], shape["eos_token_id"], args.seed)
        task = token_task_json(prompt, model="llama-2-13b shapes, random weights")
        path = args.results / f"task-{kind}.json"
        path.write_text(json.dumps(task) + "\n")
        (args.results / f"task-{kind}.txt").write_text(token_task_text(task))
        paths.append(str(path))
        print(f"{kind}: {len(task['prompt_token_ids'])}-token prompt, {len(task['targets'])} targets -> {path}")
    cmd = [sys.executable, str(REPO / "bench" / "peers" / "reference_train.py"), "--config", "llama-2-13b", "--random-init",
           "--device", "cuda", "--token-task", *paths, "--steps", str(args.steps * len(TASKS)), "--no-final-eval",
           "--seed", str(args.seed), "--out", str(args.results / "peft.json")]
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd))


def compare(args) -> None:
    # Either side may be missing (cut off by its time limit): the table says which.
    peft_path = args.results / "peft.json"
    theirs = json.loads(peft_path.read_text()) if peft_path.is_file() else {"steps": []}
    ours_files = sorted(args.results.glob("*-side-by-side.json"))
    ours = json.loads(ours_files[-1].read_text()) if ours_files else {}
    rows = []
    ok = True
    for kind in TASKS:
        alias = f"synthetic-{kind}"
        # Their first step of each task pays for CUDA and cuBLAS warm-up: medians of the rest.
        steps = [s for s in theirs["steps"] if s["prompt"] == alias]
        timed = [s["seconds"] for s in steps[1:]] or [s["seconds"] for s in steps]
        mine = next((s for s in ours.get("steps", []) if s["task"] == alias), None)
        if not timed or mine is None:
            ok = False
            rows.append({"task": kind, "missing": [side for side, gone in (("peft", not timed), ("diffuse", mine is None)) if gone]})
            continue
        t_ref, t_ours = statistics.median(timed), mine["optimiser_step_ms"] / 1e3
        rows.append({"task": kind, "peft_step_s": t_ref, "peft_positions": steps[0]["positions"],
                     "diffuse_optimiser_step_s": t_ours, "diffuse_forward_backward_s": mine["step_ms"] / 1e3,
                     "diffuse_rows": mine["rows"], "diffuse_mfu": mine["mfu"], "speedup": t_ref / t_ours,
                     "target_speedup": 10, "meets_target": t_ref / t_ours >= 10})
        print(f"{kind}: PEFT {t_ref * 1e3:.1f} ms/step ({steps[0]['positions']} positions), diffuse {t_ours * 1e3:.1f} ms/step "
              f"({mine['rows']} rows, MFU {100 * mine['mfu']:.1f}%): {t_ref / t_ours:.1f}x")
    out = {"device": ours.get("device"), "commit": ours.get("git_commit"), "model": "llama-2-13b shapes, random bf16 weights",
           "lora": theirs.get("lora"), "peft_versions": theirs.get("versions"), "peft_dtype": theirs.get("dtype"),
           "attn_implementation": theirs.get("attn_implementation"), "tasks": rows}
    path = args.results / "side-by-side.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    sys.exit(0 if ok else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["reference", "compare"])
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "gpu")
    ap.add_argument("--steps", type=int, default=3, help="optimiser steps per task on the PEFT side (the first is warm-up)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    reference(args) if args.what == "reference" else compare(args)


if __name__ == "__main__":
    main()
