"""The ceiling for our sgemm: an external, well-tuned BLAS on the same shapes and threads.

    python bench/blas_ceiling.py THREADS SECONDS SHAPES_JSON

SHAPES_JSON is a list of [kind, M, N, K] (kind 'nt': A[M,K] @ B[N,K]^T, 'nn': A[M,K] @ B[K,N]).
Each shape runs through torch.matmul (MKL on x86) and numpy.matmul (OpenBLAS in numpy's
wheels), float32, interleaved, for about SECONDS each; prints one JSON object: the libraries'
names and, per shape, the fastest call's and the median call's GFLOP/s for both.
"""
import json
import os
import sys
import time

threads = int(sys.argv[1])
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(threads)
seconds = float(sys.argv[2])
shapes = json.loads(sys.argv[3])


def numpy_blas():
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name')} {info.get('version')}"
    except Exception:  # noqa: BLE001 - older numpy: name unknown
        return "numpy's BLAS"


def torch_blas():
    cfg = torch.__config__.show()
    for line in cfg.splitlines():
        if "Math Kernel Library" in line:
            return "MKL " + line.split("Version")[-1].strip().split("-")[0].strip()
    return "torch's BLAS"


rng = np.random.default_rng(0)
out = {"isaCap": os.environ.get("MKL_ENABLE_INSTRUCTIONS", "none"), "threads": threads, "torch": f"torch {torch.__version__} ({torch_blas()})", "numpy": f"numpy {np.__version__} ({numpy_blas()})", "shapes": []}
for kind, M, N, K in shapes:
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if kind == "nt" else (K, N), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    calls = {
        "torch": (lambda: torch.matmul(ta, tb.t())) if kind == "nt" else (lambda: torch.matmul(ta, tb)),
        "numpy": (lambda: a @ b.T) if kind == "nt" else (lambda: a @ b),
    }
    times = {k: [] for k in calls}
    for f in calls.values():
        f()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times["torch"]) < 3:
        for k, f in calls.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    flops = 2.0 * M * N * K
    row = {"kind": kind, "M": M, "N": N, "K": K}
    for k, ts in times.items():
        ts.sort()
        row[k] = {"bestGflops": flops / ts[0] / 1e9, "medianGflops": flops / ts[len(ts) // 2] / 1e9, "calls": len(ts)}
    out["shapes"].append(row)
print(json.dumps(out))
