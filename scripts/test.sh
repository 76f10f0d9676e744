#!/usr/bin/env bash
# Install from this checkout (with the embedded demo model, which the README's Python API test runs on)
# and run the test suite (offline, CPU, a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh demo
python3 -m pytest -q "$@"
