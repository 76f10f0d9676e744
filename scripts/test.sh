#!/usr/bin/env bash
# Install from this checkout into the project's virtual environment (`.venv`, or LAYERSHEAR_VENV; created on
# the first run, reused after) with the embedded demo model, which the README's Python API test runs on, and
# run the test suite with that environment's python (offline, CPU, a few minutes on 2 cores).
# Arguments go to pytest: bash scripts/test.sh -q tests/cli/test_help.py
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${LAYERSHEAR_VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export LAYERSHEAR_VENV="$VENV"
cd "$ROOT"
bash scripts/install.sh demo
"$VENV/bin/python" -m pytest -q "$@"
