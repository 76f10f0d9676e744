"""`layershear --help` and every command's --help answer without importing torch or transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ["", "prune", "score", "export", "eval", "analyze", "convert-gguf", "push"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_imports_neither_torch_nor_transformers(command):
    code = ("import sys\nfrom layershear.cli import cli\n"
            f"try:\n    cli({[c for c in (command, '--help') if c]!r}, prog_name='layershear')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted(m for m in ('torch', 'transformers', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Usage: layershear" in out and out.strip().splitlines()[-1] == "[]"


def test_import_layershear_is_light():
    code = "import sys, layershear\nprint('torch' in sys.modules, layershear.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"


def test_the_engine_names_of_the_cli_are_the_engines():
    from layershear.cli.options import ENGINES as NAMES
    from layershear.engine.config import ENGINES

    assert tuple(ENGINES) == NAMES
