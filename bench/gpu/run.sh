#!/usr/bin/env bash
# The GPU session's one command, in stages. Each stage runs under its own `timeout` (and the
# whole run under a total budget), writes its results and log to bench/results/gpu/ and copies
# them to $OUT (when set) before the next stage starts, so a hang or a crash in one stage costs
# that stage alone and everything finished so far comes back.
#
#   bash bench/gpu/run.sh                  # stages 1-4: at most 9 minutes (the limits add up to
#                                          # the 540 s budget), about 5 expected on an H100/H200
#   bash bench/gpu/run.sh --stage 3        # one stage again (repeatable: --stage 2 --stage 3)
#   bash bench/gpu/run.sh --dry-run        # what would run, with each stage's time limit
#   options: --quick (fewer benchmark shapes), --budget SECONDS (total, default 540)
#   environment: OUT (a folder to copy results to), PYTHON, CUDACXX, DIFFUSE_CUDA_ARCH (instead
#   of nvidia-smi's), DIFFUSE_GPU_BUILD (build folder, default build-cuda), DIFFUSE_GPU_RESULTS
#   (default bench/results/gpu)
#
# Stages (limit in seconds; they add up to the default budget, so a stage that hangs costs its
# own limit and no other stage's time; a stage gets less only when --budget is smaller):
#   1 build    (180) cmake + nvcc for this GPU's architecture only: libdiffuse_cuda.so and the
#                    native check program (cuda/check); compile time and ptxas' registers /
#                    spills per kernel in build.log. Later stages reuse the build.
#   2 checks   (110) every op and the whole model step (and 20 AdamW steps) against the CPU twin
#   3 bench     (90) peaks, kernels, LoRA linear vs plain GEMM at 7B/13B shapes r = 4/16/64,
#                    fused log-probs vs the LM-head GEMM, then (45) full optimiser steps at
#                    Llama-2-13B shapes with MFU
#   4 peft     (115) transformers + PEFT (bench/peers/reference_train.py) and ours on the same
#                    GPU, shapes and token ids (bench/gpu/peft_side.py); needs a Python with
#                    torch, transformers, peft and numpy ($PYTHON, else python3): theirs (70),
#                    ours (35), the comparison (10)
#   5 jest     (240) only when asked (--stage 5): the addon with DIFFUSE_CUDA=ON and the jest CUDA
#                    tests; needs Node and node_modules
#
# Writes bench/results/gpu/: stages.json (each stage's status, exit code, seconds), build.json,
# <device>-checks.json, <device>-bench.json, <device>-steps.json, task-*.{json,txt}, peft.json,
# <device>-side-by-side.json, side-by-side.json, and stage-N-*.log; $OUT gets all of it as
# gpu-results.tar.gz and the summaries beside it (7 files at most). Exit status: 0 when every
# stage that ran passed, else the number of the first stage that failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

stages=()
quick=()
dry_run=0
budget=540
usage() {
  echo "usage: bash bench/gpu/run.sh [--stage N]... [--quick] [--budget SECONDS] [--dry-run]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) [ $# -ge 2 ] && [[ "$2" =~ ^[1-5]$ ]] || usage; stages+=("$2"); shift 2 ;;
    --quick) quick=(--quick); shift ;;
    --budget) [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || usage; budget=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    *) usage ;;
  esac
done
[ ${#stages[@]} -eq 0 ] && stages=(1 2 3 4)

results=${DIFFUSE_GPU_RESULTS:-bench/results/gpu}
[ $dry_run -eq 1 ] && results=$(mktemp -d /tmp/diffuse-gpu-dry-run.XXXXXX)
build=${DIFFUSE_GPU_BUILD:-build-cuda}
check_bin=$build/diffuse_cuda_check
start=$(date +%s)
commit=${DIFFUSE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
python_bin=${PYTHON:-python3}
export PYTHONUNBUFFERED=1  # a Python stage cut off at its limit still shows what it printed
log() { echo "== $*"; }

# Copies what exists so far to $OUT: called after every stage, so a later hang loses nothing.
# The device tool returns at most 8 files: everything goes in gpu-results.tar.gz, and the
# summaries (at most 6 more) beside it for reading at once.
ship() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  tar -czf "$OUT/gpu-results.tar.gz" -C "$results" . 2>/dev/null
  local f
  for f in "$results"/stages.json "$results"/build.json "$results"/side-by-side.json "$results"/*-checks.json \
    "$results"/*-bench.json "$results"/*-steps.json; do
    [ -f "$f" ] && cp "$f" "$OUT/"
  done
  return 0
}

# stages.json: one entry per stage run, rewritten after each.
stage_records=()
record() {  # number name status exit_code seconds
  stage_records+=("{\"stage\":$1,\"name\":\"$2\",\"status\":\"$3\",\"exit_code\":$4,\"seconds\":$5}")
  local IFS=,
  printf '{"commit":"%s","date":"%s","gpu":"%s","stages":[%s]}\n' "$commit" "$(date -u +%FT%TZ)" "${gpu_name:-}" \
    "${stage_records[*]}" >"$results/stages.json"
  ship
}

# Runs "$@" under a limit of min(cap, what the total budget has left) seconds, output to a log.
# Sets run_status (ok | failed | timeout | skipped) and run_code.
run_limited() {  # cap logfile command...
  local cap=$1 logfile=$2
  shift 2
  local left=$((budget - ($(date +%s) - start)))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 5 ]; then
    run_status=skipped run_code=0
    echo "skipped: ${left}s of the ${budget}s budget left" | tee -a "$logfile"
    return
  fi
  if [ $dry_run -eq 1 ]; then
    echo "  [dry run, limit ${limit}s] $*"
    run_status=ok run_code=0
    return
  fi
  # TERM at the limit, KILL 5 s later: a wedged CUDA call does not outlive its stage (the grace
  # comes out of the budget, so the whole run ends within about budget + 5 s).
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$logfile"
  run_code=${PIPESTATUS[0]}
  if [ "$run_code" -eq 0 ]; then run_status=ok
  elif [ "$run_code" -eq 124 ] || [ "$run_code" -eq 137 ]; then run_status=timeout; echo "stage limit of ${limit}s reached" | tee -a "$logfile"
  else run_status=failed
  fi
}

# ---------------------------------------------------------------- the machine
if [ $dry_run -eq 1 ]; then
  gpu_name="(dry run)"
  arch=${DIFFUSE_CUDA_ARCH:-90}
else
  if ! command -v nvidia-smi >/dev/null; then
    echo "no NVIDIA GPU here (nvidia-smi is not on PATH): run this on the GPU machine; --dry-run shows what it would do" >&2
    exit 3
  fi
  gpu_line=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -1)
  if ! [[ "$gpu_line" =~ ,\ *[0-9]+\.[0-9]+$ ]]; then
    echo "nvidia-smi found no usable GPU: $gpu_line" >&2
    exit 3
  fi
  gpu_name=${gpu_line%%,*}
  arch=${DIFFUSE_CUDA_ARCH:-$(echo "${gpu_line##*,}" | tr -d ' .')}
  log "GPU: $gpu_line"
fi

find_nvcc() {  # logfile
  local nvcc_bin=${CUDACXX:-$(command -v nvcc || ls -d /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc 2>/dev/null | head -1)}
  if [ -z "$nvcc_bin" ] || [ ! -x "$nvcc_bin" ]; then
    echo "no nvcc found: set CUDACXX to the CUDA 13.0 compiler (bash scripts/install-cuda-toolchain.sh DIR prints the settings)" |
      tee -a "$1" >&2
    return 1
  fi
  export CUDACXX=$nvcc_bin
}

mkdir -p "$results"

# ---------------------------------------------------------------- stages
stage_build() {
  local logfile=$results/stage-1-build.log
  : >"$logfile"
  if [ $dry_run -eq 0 ]; then
    find_nvcc "$logfile" || { run_status=failed run_code=3; return; }
    log "nvcc: $("$CUDACXX" --version | tail -1)" | tee -a "$logfile"
  fi
  local generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  local t0=$(date +%s)
  run_limited 180 "$logfile" bash -c "cmake -S . -B $build ${generator[*]} -DCMAKE_BUILD_TYPE=Release -DDIFFUSE_CUDA=ON \
    -DDIFFUSE_CUDA_ARCHITECTURES=$arch -DDIFFUSE_CUDA_PTXAS_VERBOSE=ON >$results/build.log 2>&1 &&
    cmake --build $build --target diffuse_cuda_check -j $(nproc) >>$results/build.log 2>&1;
    status=\$?; grep -E 'error|warning' $results/build.log | grep -v 'ptxas info' | head -20; exit \$status"
  local seconds=$(($(date +%s) - t0))
  [ "$run_status" = ok ] || tail -30 "$results/build.log" 2>/dev/null
  [ $dry_run -eq 1 ] && return
  # ptxas prints "N bytes spill stores" per kernel; the count of kernels that spill at all.
  local spills
  spills=$(grep "bytes spill stores" "$results/build.log" 2>/dev/null | grep -vc " 0 bytes spill stores")
  printf '{"arch":"sm_%s","status":"%s","seconds":%d,"cores":%d,"nvcc":"%s","kernels_with_spills":%d}\n' "$arch" "$run_status" \
    "$seconds" "$(nproc)" "$("$CUDACXX" --version | tail -1)" "${spills:-0}" >"$results/build.json"
  log "build: $run_status in ${seconds}s for sm_$arch; kernels compiled in this run that spill registers: ${spills:-0}"
}

need_build() {
  if [ $dry_run -eq 0 ] && [ ! -x "$check_bin" ]; then
    echo "$check_bin is not built: run stage 1 first (bash bench/gpu/run.sh --stage 1)" | tee -a "$1"
    run_status=failed run_code=4
    return 1
  fi
}

stage_checks() {
  local logfile=$results/stage-2-checks.log
  : >"$logfile"
  need_build "$logfile" || return
  run_limited 110 "$logfile" "$check_bin" --checks-only --out "$results" --commit "$commit"
}

stage_bench() {
  local logfile=$results/stage-3-bench.log
  : >"$logfile"
  need_build "$logfile" || return
  run_limited 90 "$logfile" "$check_bin" --bench-only "${quick[@]}" --out "$results" --commit "$commit"
  local first_status=$run_status first_code=$run_code
  ship
  run_limited 45 "$logfile" "$check_bin" --steps-only "${quick[@]}" --out "$results" --commit "$commit"
  if [ "$first_status" != ok ] && [ "$run_status" = ok ]; then run_status=$first_status run_code=$first_code; fi
}

stage_peft() {
  local logfile=$results/stage-4-peft.log
  : >"$logfile"
  need_build "$logfile" || return
  if [ $dry_run -eq 0 ] && ! "$python_bin" -c "import torch, transformers, peft, numpy; assert torch.cuda.is_available()" >>"$logfile" 2>&1; then
    echo "$python_bin lacks torch (with CUDA), transformers, peft or numpy: set PYTHON" | tee -a "$logfile"
    run_status=failed run_code=5
    return
  fi
  # Theirs first (it writes the token tasks both sides train on), then ours on the same files.
  run_limited 70 "$logfile" "$python_bin" bench/gpu/peft_side.py reference --results "$results"
  local theirs=$run_status theirs_code=$run_code
  ship
  if [ $dry_run -eq 1 ] || [ -f "$results/task-rng.txt" ]; then
    run_limited 35 "$logfile" "$check_bin" --token-task "$results/task-rng.txt" --token-task "$results/task-baby-names.txt" \
      --tag side-by-side --out "$results" --commit "$commit"
  fi
  run_limited 10 "$logfile" "$python_bin" bench/gpu/peft_side.py compare --results "$results"
  if [ "$theirs" != ok ]; then run_status=$theirs run_code=$theirs_code; fi
}

stage_jest() {
  local logfile=$results/stage-5-jest.log
  : >"$logfile"
  if ! command -v node >/dev/null || [ ! -f node_modules/jest/bin/jest.js ]; then
    echo "needs Node and node_modules (carry them)" | tee -a "$logfile"
    run_status=failed run_code=6
    return
  fi
  run_limited 240 "$logfile" bash -c "DIFFUSE_CUDA=ON node scripts/build-native.mjs --force >$results/addon-build.log 2>&1 &&
    node --experimental-vm-modules node_modules/jest/bin/jest.js test/cuda"
}

first_failed=0
names=(none build checks bench peft jest)
for n in "${stages[@]}"; do
  name=${names[$n]}
  log "stage $n: $name ($(($(date +%s) - start))s into the run)"
  t0=$(date +%s)
  run_status=ok run_code=0
  "stage_$name"
  seconds=$(($(date +%s) - t0))
  log "stage $n: $run_status (exit $run_code) in ${seconds}s"
  record "$n" "$name" "$run_status" "$run_code" "$seconds"
  if [ "$run_status" != ok ] && [ "$run_status" != skipped ] && [ $first_failed -eq 0 ]; then first_failed=$n; fi
done
log "done in $(($(date +%s) - start))s; results in $results${OUT:+ and $OUT}"
exit "$first_failed"
