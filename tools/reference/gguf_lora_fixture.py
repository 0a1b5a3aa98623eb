"""The committed GGUF LoRA fixture: a PEFT adapter converted by llama.cpp's own converter.

    PYTHONPATH=<llama.cpp>/gguf-py <pyenv>/bin/python tools/reference/gguf_lora_fixture.py \
        --llama-cpp <llama.cpp source dir> [--out test/fixtures/gguf-lora]

Writes, for a tiny Llama (the test suite's tinyConfig defaults: hidden 32, 4 heads, 2 KV heads,
intermediate 48, 2 layers, vocabulary 61):
  config.json                      the base model's config (all the converter reads of it)
  peft/adapter_config.json         a rank-4 LoRA on all seven projections, lora_alpha 8 …
  peft/adapter_model.safetensors   … with seeded random A and B (B nonzero, so it does something)
  adapter.gguf                     convert_lora_to_gguf.py --outtype f32 of that adapter

llama.cpp's converter permutes the Q/K rows of lora_b as it permutes the base weights, names the
tensors blk.N.<tensor>.weight.lora_a / .lora_b, and writes general.type = adapter, adapter.type =
lora, adapter.lora.alpha; the test suite checks `diffuse export` writes the same and reads it back.
The llama.cpp source dir is the one llama-cpp-python vendors (vendor/llama.cpp in its sdist).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "vocab_size": 61,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "torch_dtype": "float32",
}
RANK, ALPHA = 4, 8
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def shapes() -> dict[str, tuple[int, int]]:
    d, q, kv, i = 32, 4 * 8, 2 * 8, 48
    return {"q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, q),
            "gate_proj": (i, d), "up_proj": (i, d), "down_proj": (d, i)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("test/fixtures/gguf-lora"))
    args = ap.parse_args()
    out = args.out
    (out / "peft").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    g = torch.Generator().manual_seed(13)
    tensors = {}
    for layer in range(CONFIG["num_hidden_layers"]):
        for m in MODULES:
            o, i = shapes()[m]
            block = "mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            key = f"base_model.model.model.layers.{layer}.{block}.{m}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(RANK, i, generator=g) / i ** 0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(o, RANK, generator=g) * 0.1
    save_file(tensors, str(out / "peft" / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "peft" / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": None,
        "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0, "target_modules": MODULES,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
    }, indent=2) + "\n")
    subprocess.run([sys.executable, str(args.llama_cpp / "convert_lora_to_gguf.py"), "--base", str(out),
                    "--outtype", "f32", "--outfile", str(out / "adapter.gguf"), str(out / "peft")], check=True)


if __name__ == "__main__":
    main()
