#!/usr/bin/env bash
# Create the Python reference environment that diffuse is compared against: the paper's stack
# (PyTorch + HF transformers + PEFT) and llama.cpp (llama-cpp-python, built from source for
# this CPU). It is used by tools/reference/*.py and bench/peers/*.py, never by npm test or CI.
#
#   tools/python/setup-env.sh [DIR]
#
# DIR defaults to $DIFFUSE_HOME/pyenv, DIFFUSE_HOME to ~/.cache/diffuse. The venv lives outside
# the repo. Versions come from requirements.txt (top-level pins) and constraints.txt (the full
# resolved set, so transitive packages are pinned too). Needs: python3 >= 3.10 with venv, a C++
# compiler and cmake (for llama-cpp-python), network access to PyPI. Re-running over an
# existing DIR reinstalls into it.
#
# Environment knobs:
#   PYTHON          interpreter to build the venv from (default: python3)
#   LLAMA_CMAKE_ARGS  extra CMake flags for llama.cpp (default builds CPU-only, -march=native)
#   LLAMA_AMX=1     keep llama.cpp's AMX kernels (off by default: see below)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
diffuse_home="${DIFFUSE_HOME:-$HOME/.cache/diffuse}"
env_dir="${1:-$diffuse_home/pyenv}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "setup-env: $python is older than 3.10; set PYTHON to a newer interpreter" >&2
  exit 1
fi
for tool in cmake c++; do
  if ! command -v "$tool" >/dev/null; then
    echo "setup-env: '$tool' not found; llama-cpp-python is built from source and needs it" >&2
    exit 1
  fi
done

echo "setup-env: creating venv at $env_dir"
"$python" -m venv "$env_dir"
pip=("$env_dir/bin/python" -m pip)
"${pip[@]}" install --upgrade "pip==26.3" "setuptools==84.2.1" wheel

# torch, transformers, peft, ... (torch pulls its CUDA runtime wheels: see requirements.txt).
"${pip[@]}" install -r "$here/requirements.txt" -c "$here/constraints.txt"

# llama-cpp-python compiles llama.cpp. CPU only; GGML_NATIVE tunes it for this machine (AVX-512
# here), as a user building llama.cpp for speed would. --no-binary and --no-cache-dir make sure
# no wheel built for another CPU is reused. AMX is compiled out unless LLAMA_AMX=1: on the
# project's machines (Xeon with AMX, Firecracker VM) llama.cpp's AMX matmul segfaults on the
# first decode of the Q4_1 model (ggml_backend_amx_mul_mat; llama.cpp issue #20824, open), so
# the fastest llama.cpp that runs here is the AVX-512 one. GCC and Clang let an explicit
# -mno-<isa> win over -march=native whatever the order.
llama_flags=""
if [[ "${LLAMA_AMX:-0}" != 1 ]]; then
  llama_flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
CFLAGS="${CFLAGS:-} $llama_flags" CXXFLAGS="${CXXFLAGS:-} $llama_flags" \
CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_BLAS=OFF ${LLAMA_CMAKE_ARGS:-}" \
  "${pip[@]}" install --no-cache-dir --no-binary llama-cpp-python --force-reinstall --no-deps \
  -r "$here/requirements-llama.txt"
"${pip[@]}" install -r "$here/requirements-llama.txt" -c "$here/constraints.txt"

"$env_dir/bin/python" - <<'EOF'
from importlib.metadata import version
import torch, transformers, peft, gguf, safetensors, numpy, llama_cpp  # noqa: F401  (imports work)
names = ["torch", "transformers", "peft", "gguf", "safetensors", "numpy", "llama-cpp-python"]
print("setup-env: ok:", ", ".join(f"{n} {version(n)}" for n in names))
print("setup-env: torch CUDA available:", torch.cuda.is_available())
EOF
echo "setup-env: done. Use $env_dir/bin/python to run tools/reference/*.py and bench/peers/*.py"
