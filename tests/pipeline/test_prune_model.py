"""prune_model() -> PruneRun: the whole job as a library call, on a tiny model (path or in memory)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import load, run_cli

import layershear
from layershear.errors import ExportError, LayershearError
from layershear.inputs import DataSource


def _run(model, data_dir, **kw):
    events = []
    run = layershear.prune_model(model, calib="piqa:16", num_remove=2, data=DataSource("local", data_dir),
                                 on_event=events.append, **kw)
    return run, events


def test_prune_model_from_a_folder(tiny_lm_dir, data_dirs, tmp_path):
    run, events = _run(tiny_lm_dir, data_dirs[0])
    assert len(run.removed) == 2 and run.kept == tuple(b for b in range(4) if b not in run.removed)
    assert run.metric == "accuracy" and run.strategy == "greedy" and run.fingerprint is None
    assert [s.chosen.block_idx for s in run.steps] == list(run.removed) and run.cost["models_scored"] > 0
    assert run.final is run.search.final and run.full.above_random
    assert run.record["search"]["removed"] == list(run.removed)
    assert run.record["command"].startswith("layershear.prune_model(")
    # progress: one scoring stage whose total bounds the passes it counts
    kinds = [e.kind for e in events]
    assert {"note", "info", "stage", "progress"} <= set(kinds)
    stage = max(i for i, e in enumerate(events) if e.kind == "stage" and e.text == "scoring")
    done = sum(e.count for e in events[stage:] if e.kind == "progress")
    assert 0 < done <= events[stage].total
    out = run.save_pretrained(tmp_path / "pruned")
    assert out == run.saved_to and load(out).config.num_hidden_layers == 2
    card = (out / "README.md").read_text()
    assert "accuracy-based relevance, greedy search" in card and "2605.14075" in card
    assert json.loads((out / "layershear.json").read_text())["search"]["removed"] == list(run.removed)


def test_save_pretrained_writes_what_the_cli_writes(tiny_lm_dir, data_dirs, tmp_path):
    cli_out = tmp_path / "cli"
    result = run_cli("prune", tiny_lm_dir, "--num-remove", "2", "--calib", "piqa:16", "--data-dir", data_dirs[0],
                     "--data-source", "local", "--out", cli_out)
    assert result.exit_code == 0, result.output
    run, _ = _run(tiny_lm_dir, data_dirs[0])
    api_out = run.save_pretrained(tmp_path / "api")
    assert sorted(p.name for p in cli_out.iterdir()) == sorted(p.name for p in api_out.iterdir())
    a, b = json.loads((cli_out / "layershear.json").read_text()), json.loads((api_out / "layershear.json").read_text())
    for record in (a, b):       # when and how it was called, the time it took, the free memory it planned by
        record.pop("created"), record.pop("command")
        for key in ("seconds", "cache_plan", "step_reuse", "journal"):
            record["cost"].pop(key, None)
    assert a == b
    for name in (p.name for p in cli_out.iterdir() if p.suffix == ".safetensors"):
        assert (cli_out / name).read_bytes() == (api_out / name).read_bytes()


def test_a_loaded_model_is_checked_against_its_checkpoint(tiny_lm_dir, data_dirs, tmp_path):
    model = load(tiny_lm_dir)
    run, _ = _run(model, data_dirs[0])
    assert run.source == str(tiny_lm_dir) and run.fingerprint is not None
    assert load(run.save_pretrained(tmp_path / "same")).config.num_hidden_layers == 2
    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight[0, 0] += 1.0      # the weights scored are not the checkpoint's
    changed, _ = _run(model, data_dirs[0])
    with pytest.raises(ExportError, match="differs from the scored model's; save the model with model.save_pretrained"):
        changed.save_pretrained(tmp_path / "changed")
    assert not (tmp_path / "changed").exists()


def test_a_loaded_model_without_a_checkpoint_is_refused(tiny_lm_dir, data_dirs):
    model = load(tiny_lm_dir)
    model.name_or_path = ""
    with pytest.raises(LayershearError, match="has no name_or_path"):
        _run(model, data_dirs[0])


@pytest.mark.parametrize(("kw", "match"), [
    ({"metric": "cosinus"}, "Unknown metric 'cosinus'"),
    ({"search": "dijkstra"}, "Unknown search 'dijkstra'"),
    ({"beam_width": 3}, "beam width 3 applies to search='beam'"),
    ({"search": "astar", "beam_width": 2}, "astar has none"),
    ({"metric": "cosine", "search": "beam", "beam_width": 2}, "apply to --metric accuracy"),
])
def test_bad_settings_fail_before_loading(data_dirs, kw, match):
    with pytest.raises(LayershearError, match=match):
        layershear.prune_model("no/such-model", calib="piqa:16", num_remove=1,
                               data=DataSource("local", data_dirs[0]), **kw)


def test_beam_search_and_baseline_metric(tiny_lm_dir, data_dirs, tmp_path):
    beam, _ = _run(tiny_lm_dir, data_dirs[0], search="beam", beam_width=2)
    assert beam.strategy == "beam(2)" and beam.record["search"]["width"] == 2
    cosine, _ = _run(tiny_lm_dir, data_dirs[0], metric="cosine")
    assert cosine.search is None and cosine.baseline.metric == "cosine" and cosine.strategy == "one-shot"
    card = (cosine.save_pretrained(tmp_path / "cos") / "README.md").read_text()
    assert "chosen by the `cosine` baseline metric (one-shot)" in card and "accuracy-based relevance, greedy" not in card
