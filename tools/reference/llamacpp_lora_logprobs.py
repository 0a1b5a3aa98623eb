"""Target log-probs from llama.cpp (llama-cpp-python) with a GGUF LoRA adapter, for the live check
of `diffuse export --format gguf-lora` (test/adapters/gguf-lora-llamacpp.test.ts).

    <pyenv>/bin/python tools/reference/llamacpp_lora_logprobs.py --input IN.json --out OUT.json
    <pyenv>/bin/python tools/reference/llamacpp_lora_logprobs.py --dequantize BASE.gguf --to F32.gguf

IN.json: {"gguf": base, "loras": [null, "adapter.gguf", …], "threads": 2,
          "sequences": [{"prompt": [ids], "target": [ids]}, …]}
OUT.json: {"logprobs": [[per sequence] per lora], "llama_cpp_python": version}

Each sequence runs alone from an empty KV cache (Llama.reset + eval of prompt ⊕ target with every
position's logits); log p(target | prompt) is the float64 sum of log-softmax(logits)[token] over
the target's positions. `--dequantize` writes a copy of a GGUF with every tensor widened to F32
(metadata copied as is), so llama.cpp computes in f32 as diffuse does and the two can agree to
far better than its Q8_1-quantized activations allow.
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np


def dequantize(src: Path, dst: Path) -> None:
    import gguf
    from gguf.quants import dequantize as deq

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.alignment"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        values = deq(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]
        writer.add_tensor(t.name, values.reshape(shape), raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def logprobs(gguf_path: str, lora: str | None, sequences: list[dict], threads: int) -> list[float]:
    from llama_cpp import Llama

    longest = max(len(s["prompt"]) + len(s["target"]) for s in sequences)
    kwargs = {"lora_path": lora, "lora_scale": 1.0} if lora else {}
    llm = Llama(gguf_path, n_ctx=longest, n_batch=longest, n_ubatch=longest, n_threads=threads,
                n_threads_batch=threads, logits_all=True, verbose=False, **kwargs)
    out = []
    for s in sequences:
        prompt, target = s["prompt"], s["target"]
        llm.reset()
        llm.eval(prompt + target)
        z = np.asarray(llm.scores[len(prompt) - 1: len(prompt) + len(target) - 1], dtype=np.float64)
        z -= z.max(axis=1, keepdims=True)
        lsm = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        out.append(float(sum(lsm[i, tok] for i, tok in enumerate(target))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--dequantize", type=Path)
    ap.add_argument("--to", type=Path)
    args = ap.parse_args()
    if args.dequantize:
        dequantize(args.dequantize, args.to)
        return
    spec = json.loads(args.input.read_text())
    result = {"logprobs": [logprobs(spec["gguf"], lora, spec["sequences"], spec.get("threads", 2)) for lora in spec["loras"]],
              "llama_cpp_python": version("llama-cpp-python")}
    args.out.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
