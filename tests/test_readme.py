"""README.md's Python API examples run as written, on the embedded demo model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import os
import re

import pytest
from helpers import REPO_ROOT


def _api_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text[text.index("## Python API"):], re.S)


def test_readme_has_the_python_api_examples():
    blocks = _api_blocks()
    assert len(blocks) == 2 and "layershear.prune_model(" in blocks[0] and "save_pretrained" in blocks[0]


@pytest.mark.slow
def test_readme_python_api_runs_as_written(smollm2_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "models").mkdir()
    os.symlink(smollm2_dir, tmp_path / "models" / "smollm2-135m-instruct")   # where scripts/demo.sh converts it
    monkeypatch.chdir(tmp_path)
    for code in _api_blocks():
        exec(compile(code, "README.md", "exec"), {})
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained("out/smollm2-api").config.num_hidden_layers == 28
    assert AutoModelForCausalLM.from_pretrained("out/smollm2-stages").config.num_hidden_layers == 29
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("(") and "->" in printed[0] and len(printed) == 4
