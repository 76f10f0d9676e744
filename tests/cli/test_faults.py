"""Faults a careless or hostile user can cause through the CLI: one clean ``error:`` line, exit 2, checked
before any work, nothing lost (the fault table of docs/reliability.md runs the same cases as processes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file, save_file

from layershear.errors import ScoringError
from layershear.scoring.accuracy import item_scores


def _one_error(result, match: str) -> str:
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and match in errors[0], result.stderr
    return errors[0]


def _prune(model, data_dir, out, *extra):
    return run_cli("prune", model, "--num-remove", "1", "--calib", "piqa:8", "--data-source", "local",
                   "--data-dir", data_dir, "--out", out, *extra)


@pytest.mark.parametrize(("extra", "match"), [
    (["--push-to-hub", "not a valid/repo/id"], "is not a Hub repo id"),
    (["--push-to-hub", "me/x"], "HF_HUB_OFFLINE is set"),          # tests run offline (conftest)
    (["--resume"], "--resume: no journal"),
    (["--resume", "--restart"], "contradict each other"),
    (["--restart", "--metric", "cosine"], "apply to --metric accuracy (the journal), not cosine"),
])
def test_prune_refuses_before_loading(tiny_lm_dir, data_dirs, tmp_path, monkeypatch, extra, match):
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    started = time.perf_counter()
    result = _prune(tiny_lm_dir, data_dirs[0], tmp_path / "out", *extra)
    _one_error(result, match)
    assert "loading" not in result.stderr and time.perf_counter() - started < 5      # before any model is read
    assert [p.name for p in tmp_path.iterdir()] in ([], [".out.lock"])


def test_prune_out_under_a_file(tiny_lm_dir, data_dirs, tmp_path):
    (tmp_path / "afile").write_text("x")
    _one_error(_prune(tiny_lm_dir, data_dirs[0], tmp_path / "afile" / "out"), "afile is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "x"


def test_export_into_the_source_or_its_parent_is_refused(tiny_lm_dir, tmp_path):
    source = shutil.copytree(tiny_lm_dir, tmp_path / "parent" / "model")
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    for out, where in ((source.parent, "contains"), (source, "is"), (source / "sub", "is inside")):
        _one_error(run_cli("export", source, "--remove", "1", "--out", out, "--overwrite"), f"{where} the source")
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_export_while_another_run_holds_the_lock(tiny_lm_dir, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", f"import filelock, time; lock = filelock.FileLock({str(tmp_path / '.out.lock')!r}); lock"
                               ".acquire(); print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _one_error(run_cli("export", tiny_lm_dir, "--remove", "1", "--out", out), "another layershear run is writing")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert run_cli("export", tiny_lm_dir, "--remove", "1", "--out", out).exit_code == 0    # the OS freed the lock


def test_eval_of_a_nan_model_names_the_tensor(tiny_lm_dir, data_dirs, tmp_path):
    model = shutil.copytree(tiny_lm_dir, tmp_path / "model")
    shard = sorted(model.glob("*.safetensors"))[-1]
    tensors = load_file(shard)
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, shard, metadata={"format": "pt"})
    _one_error(run_cli("eval", model, "--tasks", "piqa:4", "--data-source", "local", "--data-dir", data_dirs[0]),
               f"tensor {name} of {model} holds 1 non-finite value(s) (NaN")


@pytest.mark.parametrize(("target", "match"), [("folder", "is a folder"), ("missing/x.json", "does not exist"),
                                               ("afile/x.json", "'afile' is a file")])
def test_json_paths_that_cannot_be_written(tiny_lm_dir, data_dirs, tmp_path, monkeypatch, target, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    result = run_cli("eval", tiny_lm_dir, "--tasks", "piqa:4", "--data-source", "local", "--data-dir", data_dirs[0],
                     "--json", target)
    _one_error(result, match)
    assert "loading" not in result.stderr


def test_nan_loglikelihood_is_an_error_not_an_answer():
    from helpers import mc_items

    items = mc_items(3)
    lls = torch.zeros(sum(it.num_choices for it in items), dtype=torch.float64)
    lls[4] = float("nan")              # item 1, choice 1
    with pytest.raises(ScoringError, match=r"log-likelihood of arc_easy doc 1 choice 1 is nan \(1 not finite\)"):
        item_scores(items, lls, measures=["acc"] * 3)
    lls[4] = float("-inf")
    with pytest.raises(ScoringError, match="choice 1 is -inf"):
        item_scores(items, lls, measures=["acc_norm"] * 3)


def test_interruption_turned_into_another_error_exits_as_the_signal(tiny_lm_dir, tmp_path, monkeypatch):
    """SIGTERM during safetensors' get_tensor comes out as a ValueError; it still ends as exit 143, one line."""
    import signal

    from layershear.cli import options
    from layershear.export.exporter import Exporter

    def export(*args, **kwargs):
        options.RECEIVED.append(signal.SIGTERM)
        raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'")

    monkeypatch.setattr(options, "RECEIVED", [])
    monkeypatch.setattr(Exporter, "export", export)
    result = run_cli("export", tiny_lm_dir, "--remove", "1", "--out", tmp_path / "out")
    assert result.exit_code == 143 and "interrupted (SIGTERM)" in result.stderr and "Traceback" not in result.stderr
    monkeypatch.setattr(options, "RECEIVED", [])
    with pytest.raises(ValueError, match="could not determine"):         # without a signal it is a bug: raised
        monkeypatch.setattr(Exporter, "export", lambda *a, **k: (_ for _ in ()).throw(ValueError("could not determine")))
        run_cli("export", tiny_lm_dir, "--remove", "1", "--out", tmp_path / "out")
