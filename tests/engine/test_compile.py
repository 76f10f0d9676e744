"""Opt-in torch.compile of the decoder blocks' parts (layershear.engine.compile): same numbers in fp32, same files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import CharTokenizer, load, mc_items, run_cli

from layershear.engine.compile import compile_blocks
from layershear.errors import LayershearError
from layershear.scoring.scorer import Scorer

needs_compiler = pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                                    reason="inductor needs a C++ compiler on the CPU")


@needs_compiler
def test_compiled_blocks_score_like_eager_ones(tiny_checkpoints):
    eager_model = load(tiny_checkpoints("llama"))
    compiled_model = load(tiny_checkpoints("llama"))
    names = compile_blocks(compiled_model)
    assert names[:4] == ["model.layers.0.self_attn", "model.layers.0.mlp", "model.layers.0.input_layernorm",
                         "model.layers.0.post_attention_layernorm"]
    assert len(names) == 6 * 4
    assert compiled_model.state_dict().keys() == eager_model.state_dict().keys()   # export sees the same names
    items = mc_items(8)
    eager = Scorer(eager_model, CharTokenizer(), items, batch_size=4)
    compiled = Scorer(compiled_model, CharTokenizer(), items, batch_size=4)
    for parent in (frozenset(), frozenset({2})):       # full forwards and cached-prefix child runs
        blocks = [b for b in range(6) if b not in parent]
        got, want = compiled.children(parent, blocks), eager.children(parent, blocks)
        for b in blocks:
            torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-4, rtol=1e-5)


@needs_compiler
def test_prune_compile_flag(tiny_lm_dir, data_dirs, tmp_path):
    runs = {}
    for flag in ((), ("--compile",)):
        out = tmp_path / ("compiled" if flag else "eager")
        result = run_cli("prune", tiny_lm_dir, "--num-remove", "1", "--calib", "piqa:16", "--data-dir", data_dirs[0],
                         "--out", out, *flag)
        assert result.exit_code == 0, result.output
        runs[bool(flag)] = json.loads((out / "layershear.json").read_text())
    assert "compiling 16 decoder-block modules" in result.output
    assert runs[True]["cost"]["compiled"] and not runs[False]["cost"]["compiled"]
    assert runs[True]["search"]["removed"] == runs[False]["search"]["removed"]
    assert [c["relevance"] for c in runs[True]["search"]["steps"][0]["candidates"]] == \
        pytest.approx([c["relevance"] for c in runs[False]["search"]["steps"][0]["candidates"]])


def test_compile_is_for_accuracy_relevance(tiny_lm_dir, data_dirs, tmp_path):
    result = run_cli("prune", tiny_lm_dir, "--num-remove", "1", "--calib", "piqa:16", "--data-dir", data_dirs[0],
                     "--out", tmp_path / "out", "--metric", "cosine", "--compile")
    assert result.exit_code == 2
    assert "--race, --search, --beam and --compile apply to --metric accuracy" in result.stderr


def test_compile_without_a_compiler_is_a_clear_error(tiny_checkpoints, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(LayershearError, match=r"--compile needs a compiler on PATH \(c\+\+ or g\+\+ or clang\+\+\)"):
        compile_blocks(load(tiny_checkpoints("llama")))
