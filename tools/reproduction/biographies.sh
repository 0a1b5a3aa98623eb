#!/usr/bin/env bash
# The paper's synthetic-biography comparison (§6, Tables 7–8) with SmolLM2-135M-Instruct on the
# CPU: the base model; Tuned-OOD, tuned on all six leave-one-out tasks (configs/all); Tuned-ID,
# that adapter tuned further on the 210 programmatic attribute tuples (configs/fictitious-people,
# whose ckpt_dir is pointed at the OOD adapter). Each writes SAMPLES biographies; the table gives
# per field coverage and entropy, and the most frequent values.
#
#   bash tools/reproduction/biographies.sh [OUT]    (default: reproduction/biographies)
#
# Environment: ITERS (passes over the six tasks; default 5), ID_ITERS (passes over the tuples, one
# optimiser step each; default 20), LR (default 1e-3), SAMPLES (default 200),
# MAX_TOKENS (default 96), MODEL (default smollm2-135m-instruct).
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:-reproduction/biographies}
ITERS=${ITERS:-5}
ID_ITERS=${ID_ITERS:-20}
LR=${LR:-1e-3}
SAMPLES=${SAMPLES:-200}
MAX_TOKENS=${MAX_TOKENS:-96}
MODEL=${MODEL:-smollm2-135m-instruct}
CONFIGS=data/tasks/reference/configs
BIO=data/tasks/reference/prompts/ficticious-people/ficticious-people.json
diffuse() { node dist/cli/main.js "$@"; }

[ -f dist/cli/main.js ] || { echo "build first: npm install" >&2; exit 1; }
mkdir -p "$OUT"
echo "== Tuned-OOD: the six leave-one-out tasks, $ITERS passes at lr $LR"
diffuse train "$CONFIGS/all/llama-2-13b-chat.yaml" --model "$MODEL" --out "$OUT/ood" --iters "$ITERS" --lr "$LR"

echo "== Tuned-ID: from the OOD adapter, on the 210 attribute tuples, $ID_ITERS passes"
# The copy lives in OUT, so its prompt paths are made absolute too.
sed -e "s#^ckpt_dir:.*#ckpt_dir: $(realpath "$OUT/ood")#" -e "s#- prompts/#- $(realpath data/tasks/reference)/prompts/#" \
  "$CONFIGS/fictitious-people/llama-2-13b.yaml" > "$OUT/fictitious-people.yaml"
diffuse train "$OUT/fictitious-people.yaml" --model "$MODEL" --out "$OUT/id" --iters "$ID_ITERS" --lr "$LR"

sample=(--task "$BIO" --samples "$SAMPLES" --max-tokens "$MAX_TOKENS" --json)
echo "== $SAMPLES biographies each: base and Tuned-OOD, then Tuned-ID"
diffuse eval --model "$MODEL" --adapter "$OUT/ood" --compare-base "${sample[@]}" --report "$OUT/ood-report.html" > "$OUT/base-ood.json"
diffuse eval --model "$MODEL" --adapter "$OUT/id" "${sample[@]}" > "$OUT/id.json"
npx tsx tools/reproduction/biographies-table.ts "$OUT" | tee "$OUT/table.md"
