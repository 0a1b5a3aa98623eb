#!/usr/bin/env bash
# The paper's leave-one-out experiment (§5, appendix C.1) with SmolLM2-135M-Instruct on the CPU:
# for each of the six tasks, tune on the other five with the paper's own config (model swapped),
# then measure base and tuned on the held-out task — exactly over its targets and from samples.
# Writes OUT/<task>/ (adapter, log, eval.json) and OUT/table.md; docs/REPRODUCTION.md quotes it.
#
#   bash tools/reproduction/leave-one-out.sh [OUT]    (default: reproduction/leave-one-out)
#
# Environment: ITERS (passes; default 5), LR (default 1e-3), SAMPLES (per prompt; default 100),
# MAX_TOKENS (default 24), MODEL (default smollm2-135m-instruct), THREADS (default all cores).
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:-reproduction/leave-one-out}
ITERS=${ITERS:-5}
LR=${LR:-1e-3}
SAMPLES=${SAMPLES:-100}
MAX_TOKENS=${MAX_TOKENS:-24}
MODEL=${MODEL:-smollm2-135m-instruct}
THREADS_FLAG=()
[ -n "${THREADS:-}" ] && THREADS_FLAG=(--threads "$THREADS")
CONFIGS=data/tasks/reference/configs/leave-one-out/llama-2-13b-chat
PROMPTS=data/tasks/reference/prompts
diffuse() { node dist/cli/main.js "$@"; }

[ -f dist/cli/main.js ] || { echo "build first: npm install" >&2; exit 1; }
mkdir -p "$OUT"
for task in baby-names continent-countries day-date fruits numbers occupations; do
  echo "== $task: tune on the other five, $ITERS passes at lr $LR"
  diffuse train "$CONFIGS/$task.yaml" --model "$MODEL" --out "$OUT/$task" --iters "$ITERS" --lr "$LR" "${THREADS_FLAG[@]}"
  echo "== $task: base and tuned, $SAMPLES samples per prompt"
  diffuse eval --model "$MODEL" --adapter "$OUT/$task" --compare-base --task "$PROMPTS/$task" \
    --samples "$SAMPLES" --max-tokens "$MAX_TOKENS" --json --report "$OUT/$task/report.html" "${THREADS_FLAG[@]}" > "$OUT/$task/eval.json"
done
npx tsx tools/reproduction/leave-one-out-table.ts "$OUT" | tee "$OUT/table.md"
