#!/usr/bin/env bash
# The paper's calibration-sensitivity experiment (its table: 10% mix 65.04, ARC-E alone 63.18, C4 alone
# 50.23 after pruning 25% of LLaMA3-8B) on one real model, on the CPU: prune 25% of the blocks with
# an MC mix, with one MC task alone and with C4 alone, and by cosine (ShortGPT's BI, one-shot); then
# score all of them and the full model on the same held-out documents (none used for calibration).
#   bash scripts/calibration_study.sh [MODEL_DIR] [OUT_DIR]
set -euo pipefail
MODEL="${1:-models/smollm2-135m-instruct}"
OUT="${2:-out/calibration-study}"
LS="${LAYERSHEAR:-.venv/bin/layershear}"
EVAL="${EVAL_SUITE:-arc_easy:100,hellaswag:50,piqa:100,openbookqa:100}"
COMMON=(--ratio 0.25 --dtype bf16 --overwrite)
mkdir -p "$OUT"
run() {   # name, then prune arguments; a finished run (its layershear.json exists) is kept
    local name="$1"; shift
    [ -f "$OUT/$name/layershear.json" ] && { echo "$name: kept from an earlier run"; return; }
    local start; start=$(date +%s)
    "$LS" prune "$MODEL" "${COMMON[@]}" "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
    echo "$name $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
}
run mix --calib arc_easy:16,hellaswag:8,piqa:16,openbookqa:16
run arc_easy --calib arc_easy:56
run c4 --calib c4:4
run cosine --calib arc_easy:16,hellaswag:8,piqa:16,openbookqa:16 --metric cosine
start=$(date +%s)
"$LS" eval "$MODEL" "$OUT/mix" "$OUT/arc_easy" "$OUT/c4" "$OUT/cosine" --tasks "$EVAL" --dtype bf16 \
    --exclude-calib "$OUT/mix/layershear.json" --exclude-calib "$OUT/arc_easy/layershear.json" \
    --exclude-calib "$OUT/c4/layershear.json" --exclude-calib "$OUT/cosine/layershear.json" \
    --json "$OUT/eval.json" > "$OUT/eval.log" 2>&1
echo "eval $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
