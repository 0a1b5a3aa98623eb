#!/usr/bin/env python3
"""Reference fixtures for the engine's quantizers (native().quantize), made by llama.cpp itself.

Writes test/fixtures/quantize.json: `input`, base64 of float32 values, and for every block type
the engine can store random weights in, `types.<TYPE>`:
  quantized    base64 of the blocks llama.cpp's reference quantizer (quantize_row_<type>_ref in
               the libggml-base shipped with llama-cpp-python, no importance matrix) makes of them
  dequantized  base64 of gguf.quants.dequantize's float32 values for those blocks
Where gguf-py has a quantizer of its own (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) the script checks it
makes the same bytes as llama.cpp; it has none for the K-quants. It also checks gguf-py's
dequantize against llama.cpp's dequantize_row_<type> on the same blocks.

Inputs: seeded normals at two scales (0.02, as initialised weights, and 1) with awkward
super-blocks mixed in: all zeros, a constant, one outlier, a near-zero 16/32-value group
beside large ones (its 6-bit scale rounds to 0), all positive (the min is clamped to 0), all
negative, values on rounding boundaries.

Run with the reference environment (tools/python/setup-env.sh):
  ~/.cache/diffuse/pyenv/bin/python tools/reference/quantize_fixture.py
"""
import base64
import ctypes
import json
import pathlib

import llama_cpp
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants

OUT = pathlib.Path(__file__).resolve().parents[2] / "test" / "fixtures" / "quantize.json"
LIB = ctypes.CDLL(str(pathlib.Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
rng = np.random.default_rng(20261204)

TYPES = {  # name: (gguf type, values a block, bytes a block, gguf-py can quantize)
    "Q8_0": (Q.Q8_0, 32, 34, True),
    "Q4_0": (Q.Q4_0, 32, 18, True),
    "Q4_1": (Q.Q4_1, 32, 20, True),
    "Q5_0": (Q.Q5_0, 32, 22, True),
    "Q5_1": (Q.Q5_1, 32, 24, True),
    "Q4_K": (Q.Q4_K, 256, 144, False),
    "Q5_K": (Q.Q5_K, 256, 176, False),
    "Q6_K": (Q.Q6_K, 256, 210, False),
}


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def inputs() -> np.ndarray:
    blocks = 12
    x = rng.standard_normal((blocks, 256)).astype(np.float32)
    x[:4] *= np.float32(0.02)
    x[4] = 0
    x[5] = np.float32(-0.375)
    x[6, 77] = np.float32(40.0)
    x[7, :16] *= np.float32(1e-4)  # a tiny group beside large ones
    x[7, 32:64] *= np.float32(1e-3)
    x[8] = np.abs(x[8]) + np.float32(0.5)
    x[9] = -np.abs(x[9]) - np.float32(0.1)
    x[10] = np.linspace(-1, 1, 256, dtype=np.float32)
    x[11] = np.round(x[11] * 8) / np.float32(8)
    return x.reshape(-1)


def llama_cpp_quantize(name: str, x: np.ndarray) -> np.ndarray:
    _, bv, bb, _ = TYPES[name]
    out = np.zeros(x.size // bv * bb, dtype=np.uint8)
    fn = getattr(LIB, f"quantize_row_{name.lower() if not name.endswith('_K') else name[:-1].lower() + 'K'}_ref")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    fn(x.ctypes.data, out.ctypes.data, x.size)
    return out


def llama_cpp_dequantize(name: str, q: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    fn = getattr(LIB, f"dequantize_row_{name.lower() if not name.endswith('_K') else name[:-1].lower() + 'K'}")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    fn(q.ctypes.data, out.ctypes.data, n)
    return out


def main() -> None:
    x = inputs()
    doc = {"count": int(x.size), "source": f"llama.cpp quantize_row_<type>_ref from llama-cpp-python {llama_cpp.__version__}; "
           "dequantized by gguf.quants.dequantize", "input": b64(x), "types": {}}
    for name, (qtype, bv, bb, gguf_py) in TYPES.items():
        q = llama_cpp_quantize(name, x)
        if gguf_py:
            ours = quants.quantize(x, qtype).reshape(-1)
            assert np.array_equal(ours, q), f"{name}: gguf-py quantizes differently from llama.cpp"
        dq = quants.dequantize(q, qtype).astype(np.float32).reshape(-1)
        assert np.array_equal(dq.view(np.uint32), llama_cpp_dequantize(name, q, x.size).view(np.uint32)), name
        doc["types"][name] = {"quantized": b64(q), "dequantized": b64(dq)}
        print(name, q.size, "bytes")
    OUT.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
