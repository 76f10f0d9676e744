#!/usr/bin/env bash
# Install from this checkout and run the test suite (offline, CPU, a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m pytest -q "$@"
