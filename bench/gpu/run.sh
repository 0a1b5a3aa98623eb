#!/usr/bin/env bash
# The GPU session's one command: builds the CUDA backend and diffuse_cuda_check for this
# machine's GPU, runs every check and benchmark (writing bench/results/<device-name>.json),
# then, when Node and node_modules are there, builds the addon and runs the jest CUDA tests.
# Sized for a device session's 10-minute command limit (about 3-5 minutes on an H100/H200).
#
#   bash bench/gpu/run.sh [--quick] [--no-jest] [--checks-only]
#
# Results and logs are also copied to $OUT when it is set (the device tool's return folder).
# The exit status is the check program's: 0 when every check passed.
set -uo pipefail
cd "$(dirname "$0")/../.."

check_args=()
run_jest=1
for arg in "$@"; do
  case "$arg" in
    --quick | --checks-only) check_args+=("$arg") ;;
    --no-jest) run_jest=0 ;;
    *) echo "usage: bash bench/gpu/run.sh [--quick] [--no-jest] [--checks-only]" >&2; exit 2 ;;
  esac
done

results=bench/results
mkdir -p "$results"
log() { echo "== $*"; }

nvcc_bin=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$nvcc_bin" ]; then
  echo "no nvcc found (set CUDACXX)" >&2
  exit 3
fi
export CUDACXX=$nvcc_bin
log "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1)"
log "nvcc: $("$nvcc_bin" --version | tail -1)"
# Build for this GPU only (sm_90 on an H100/H200): half the compile time of sm_80 + sm_90.
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
arch=${arch:-90}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

log "configure and build (sm_$arch), ptxas resource report in $results/build.log"
cmake -S . -B build-cuda "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DDIFFUSE_CUDA=ON \
  -DDIFFUSE_CUDA_ARCHITECTURES="$arch" -DDIFFUSE_CUDA_PTXAS_VERBOSE=ON >"$results/build.log" 2>&1 &&
  cmake --build build-cuda -j "$(nproc)" >>"$results/build.log" 2>&1
build_status=$?
grep -E "error|warning" "$results/build.log" | grep -v "ptxas info" | head -20
if [ $build_status -ne 0 ]; then
  tail -40 "$results/build.log"
  echo "build failed" >&2
  [ -n "${OUT:-}" ] && cp "$results/build.log" "$OUT/"
  exit 4
fi

commit=${DIFFUSE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
log "diffuse_cuda_check ${check_args[*]:-} (commit $commit)"
./build-cuda/diffuse_cuda_check "${check_args[@]}" --out "$results" --commit "$commit" 2>&1 | tee "$results/check.log"
status=${PIPESTATUS[0]}

if [ $run_jest -eq 1 ]; then
  if command -v node >/dev/null && [ -f node_modules/jest/bin/jest.js ]; then
    log "jest CUDA tests (addon built with DIFFUSE_CUDA=ON)"
    if DIFFUSE_CUDA=ON node scripts/build-native.mjs --force >"$results/addon-build.log" 2>&1; then
      node --experimental-vm-modules node_modules/jest/bin/jest.js test/cuda 2>&1 | tee "$results/jest.log"
      jest_status=${PIPESTATUS[0]}
    else
      echo "the addon did not build; see $results/addon-build.log"
      jest_status=1
    fi
    if [ "$jest_status" -ne 0 ] && [ "$status" -eq 0 ]; then status=5; fi
  else
    log "jest CUDA tests skipped: $(command -v node >/dev/null || echo 'no node on this machine; ')$([ -f node_modules/jest/bin/jest.js ] || echo 'no node_modules (carry them)')"
  fi
fi

if [ -n "${OUT:-}" ]; then
  cp "$results"/*.json "$results"/*.log "$OUT/" 2>/dev/null
fi
exit "$status"
