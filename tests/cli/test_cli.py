"""The CLI end to end on a tiny model (CliRunner): prune / score / export / eval / push, and bad input."""

from __future__ import annotations

import json

import pytest
from helpers import load, run_cli

from layershear.data.benchmarks import load_split
from layershear.scoring.scorer import Scorer


def test_prune_end_to_end(tiny_lm_dir, data_dirs, tmp_path):
    out = tmp_path / "pruned"
    result = run_cli("prune", tiny_lm_dir, "--num-remove", "2", "--calib", "piqa:16", "--data-dir", data_dirs[0],
                     "--eval", "piqa", "--out", out, "--batch-size", "8")
    assert result.exit_code == 0, result.output
    assert "no local 'train' split" in result.output            # the fallback is announced
    record = json.loads((out / "layershear.json").read_text())
    removed = record["search"]["removed"]
    assert len(removed) == 2 and record["search"]["kept"] == sorted(set(range(4)) - set(removed))
    assert record["calibration"]["draws"][0]["split"] == "validation"
    assert len(record["calibration"]["draws"][0]["doc_ids"]) == 16
    assert len(record["search"]["steps"][0]["candidates"]) == 4
    assert record["eval"]["base"][0]["num_docs"] == 8           # 24 docs - 16 used for calibration
    assert record["search"]["full"]["accuracy"] > record["search"]["full"]["random"]
    model = load(out)
    assert model.config.num_hidden_layers == 2
    card = (out / "README.md").read_text()
    assert all(f"| {b} |" in card or f"{b}" in card for b in removed) and "layershear" in card
    # the pruned model's calibration accuracy, recomputed from the exported folder, matches the record
    from transformers import AutoTokenizer

    items = load_split("piqa", "validation", source="local", data_dir=data_dirs[0])
    doc_ids = record["calibration"]["draws"][0]["doc_ids"]
    scorer = Scorer(model, AutoTokenizer.from_pretrained(out), [items[i] for i in doc_ids])
    assert scorer.accuracy().accuracy == pytest.approx(record["search"]["final"]["accuracy"])


def test_both_engines_prune_the_same_blocks(tiny_lm_dir, data_dirs, tmp_path):
    records = {}
    for engine in ("fast", "reference"):
        out = tmp_path / engine
        result = run_cli("prune", tiny_lm_dir, "--num-remove", "2", "--calib", "piqa:16", "--data-dir", data_dirs[0],
                         "--engine", engine, "--out", out)
        assert result.exit_code == 0, result.output
        records[engine] = json.loads((out / "layershear.json").read_text())
    fast, ref = records["fast"], records["reference"]
    assert fast["search"]["removed"] == ref["search"]["removed"]
    for a, b in zip(fast["search"]["steps"], ref["search"]["steps"]):
        assert [c["relevance"] for c in a["candidates"]] == pytest.approx([c["relevance"] for c in b["candidates"]])
    assert fast["cost"]["block_tokens"] < ref["cost"]["block_tokens"]
    assert ref["cost"]["engine"] == {"scored_head": False, "skip_prefix": False, "share_context": False, "pack": False,
                                     "row_tokens": None, "step_reuse": False, "stack_tokens": 0,
                                     "fused_kernels": False}
    assert ref["cost"]["step_reuse"] is None and fast["cost"]["step_reuse"]["guesses"] == 3
    assert ref["cost"]["fused_kernels"] is None
    assert fast["cost"]["fused_kernels"]["rms_norm_modules"] == 2 * 4 + 1   # two per block and the final norm
    assert fast["cost"]["fused_kernels"]["rotary_modules"] == ["transformers.models.llama.modeling_llama"]


def test_score_json_to_stdout(tiny_lm_dir, data_dirs):
    result = run_cli("score", tiny_lm_dir, "--calib", "piqa:16", "--data-dir", data_dirs[0], "--json", "-")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert [b["block_idx"] for b in record["blocks"]] == [0, 1, 2, 3]
    assert all(b["relevance"] <= 1.0 for b in record["blocks"])
    assert record["full"]["accuracy"] > record["full"]["random"]


def test_export_and_eval_two_models(tiny_lm_dir, data_dirs, tmp_path):
    out = tmp_path / "drop1"
    assert run_cli("export", tiny_lm_dir, "--remove", "1,3", "--out", out).exit_code == 0
    assert load(out).config.num_hidden_layers == 2
    result = run_cli("eval", tiny_lm_dir, out, "--tasks", "piqa:10", "--data-dir", data_dirs[0], "--json", "-")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)["results"]
    assert set(results) == {str(tiny_lm_dir), str(out)}
    assert results[str(out)][0]["num_docs"] == 10 and set(results[str(out)][0]["values"]) == {"acc", "acc_norm"}


@pytest.mark.parametrize("search", ["astar", "evolve"])
def test_prune_with_a_search_beyond_greedy(tiny_lm_dir, data_dirs, tmp_path, search):
    out = tmp_path / search
    result = run_cli("prune", tiny_lm_dir, "--num-remove", "2", "--calib", "piqa:16", "--data-dir", data_dirs[0],
                     "--search", search, "--search-budget", "30", "--race", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "layershear.json").read_text())
    assert record["search"]["strategy"] == search and len(record["search"]["removed"]) == 2
    assert record["settings"]["search"] == search and record["settings"]["search_budget"]["evaluations"] == 30
    cost = record["cost"]["search"]
    assert 0 < cost["evaluations"] <= 30 + 4 + 1 and cost["documents"] > 0 and cost["block_tokens"] > 0
    assert record["cost"]["race"]["bound"] == "mcnemar"
    assert all("documents" in c for step in record["search"]["steps"] for c in step["candidates"])
    assert load(out).config.num_hidden_layers == 2


def _assert_one_error_line(result, match: str):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1] and match in errors[0], result.stderr


@pytest.mark.parametrize(("args", "match"), [
    (["--ratio", "0"], "--ratio must be in (0, 1)"),
    (["--ratio", "1"], "--ratio must be in (0, 1)"),
    (["--ratio", "0.5", "--calib", "hellaswg:0.1"], "Unknown task 'hellaswg'. Did you mean: hellaswag?"),
    (["--num-remove", "4"], "Cannot remove 4 of 4 blocks"),
    (["--num-remove", "1", "--search-budget", "ten"], "--search-budget 'ten': give a whole number"),
    (["--num-remove", "1", "--search", "astar", "--beam", "2"], "beam width 2 applies to search='beam'"),
])
def test_prune_bad_input(tiny_lm_dir, data_dirs, tmp_path, args, match):
    out = tmp_path / "out"
    base = ["prune", tiny_lm_dir, "--data-dir", data_dirs[0], "--out", out]
    if "--calib" not in args:
        base += ["--calib", "piqa:8"]
    _assert_one_error_line(run_cli(*base, *args), match)
    assert [p.name for p in tmp_path.iterdir()] in ([], [".out.lock"])    # no output, temp folder or journal


def test_missing_model_folder(tmp_path, data_dirs):
    result = run_cli("prune", "./no/such/model", "--ratio", "0.25", "--calib", "piqa:8", "--data-dir", data_dirs[0],
                     "--out", tmp_path / "o")
    _assert_one_error_line(result, "does not exist")


def test_existing_output_is_refused_and_untouched(tiny_lm_dir, data_dirs, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = run_cli("prune", tiny_lm_dir, "--ratio", "0.25", "--calib", "piqa:8", "--data-dir", data_dirs[0], "--out", out)
    _assert_one_error_line(result, "exists; pass --overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    _assert_one_error_line(run_cli("export", tiny_lm_dir, "--remove", "1", "--out", out), "exists")


def test_relevance_undefined_when_model_is_at_chance(tiny_lm_dir, data_dirs, tmp_path):
    result = run_cli("prune", tiny_lm_dir, "--num-remove", "1", "--calib", "piqa:16", "--data-dir", data_dirs[1],
                     "--out", tmp_path / "o")
    _assert_one_error_line(result, "not above random")
    assert not (tmp_path / "o").exists()


def test_bad_drop_list(tiny_lm_dir, tmp_path):
    _assert_one_error_line(run_cli("export", tiny_lm_dir, "--remove", "1,x", "--out", tmp_path / "o"), "comma-separated")
    _assert_one_error_line(run_cli("export", tiny_lm_dir, "--remove", "9", "--out", tmp_path / "o"), "9")


def test_push_to_hub_uses_create_repo_and_upload_folder(tiny_lm_dir, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")      # the Hub is mocked here; offline mode would refuse the push

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return type("Info", (), {"commit_url": "https://hub/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_x")
    result = run_cli("push", tiny_lm_dir, "me/tiny", "--private")
    assert result.exit_code == 0, result.output
    assert calls[1] == ("create_repo", "me/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls[2][1]["repo_id"] == "me/tiny" and calls[2][1]["folder_path"] == str(tiny_lm_dir)


def test_push_without_token_is_one_clear_error(tiny_lm_dir, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")      # the Hub is mocked here; offline mode would refuse the push

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    _assert_one_error_line(run_cli("push", tiny_lm_dir, "me/tiny"), "No Hugging Face token found")


def test_checks_that_need_no_model_run_before_loading_it(tmp_path, data_dirs, monkeypatch):
    import layershear.model.loading

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(layershear.model.loading, "load_model", boom)
    base = ["prune", "any/model", "--calib", "piqa:8", "--data-dir", data_dirs[0], "--out", tmp_path / "o"]
    _assert_one_error_line(run_cli(*base, "--ratio", "0.5", "--num-remove", "2"), "exactly one of --ratio")
    _assert_one_error_line(run_cli(*base, "--num-remove", "0"), "--num-remove must be at least 1")
    _assert_one_error_line(run_cli(*base, "--ratio", "0.5", "--max-shard-size", "0GB"), "positive size")
    _assert_one_error_line(run_cli(*base, "--ratio", "0.5", "--eval", "hellaswg"), "Did you mean: hellaswag?")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE")         # else offline mode is the first thing the push check names
    _assert_one_error_line(run_cli(*base, "--ratio", "0.5", "--push-to-hub", "me/x"), "No Hugging Face token")


def test_eval_rejects_a_bad_exclusion_file(tiny_lm_dir, data_dirs, tmp_path):
    bad = tmp_path / "layershear.json"
    bad.write_text('{"calibration": {"draws": [{"task": "piqa"}]}}')
    result = run_cli("eval", tiny_lm_dir, "--tasks", "piqa", "--data-dir", data_dirs[0], "--exclude-calib", bad)
    _assert_one_error_line(result, "expected a layershear.json")


@pytest.mark.slow      # two torchrun processes; still runs by default (no -m filter)
@pytest.mark.parametrize("mode", [["--race"], [], ["--placement", "streamed"]])   # racing / step reuse / layer-major
def test_torchrun_two_processes_prune_the_same_blocks(tiny_lm_dir, data_dirs, tmp_path, mode):
    import os
    import subprocess
    import sys

    args = ["prune", str(tiny_lm_dir), "--num-remove", "2", "--calib", "piqa:16", "--data-dir", str(data_dirs[0]),
            "--batch-size", "2", *mode]
    single = run_cli(*args, "--out", tmp_path / "one")
    assert single.exit_code == 0, single.output
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "layershear", *args, "--out", str(tmp_path / "two")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "layershear.json").read_text())
    two = json.loads((tmp_path / "two" / "layershear.json").read_text())
    assert two["search"]["removed"] == one["search"]["removed"]
    for a, b in zip(one["search"]["steps"], two["search"]["steps"]):
        assert [c["relevance"] for c in a["candidates"]] == pytest.approx([c["relevance"] for c in b["candidates"]])
    # each process ran about half of the forward passes
    assert two["cost"]["forward_passes"] < one["cost"]["forward_passes"]
    assert proc.stderr.count("removing 2 of 4 blocks") == 1          # rank 1 is quiet


def test_streamed_placement_prunes_the_same_blocks_as_in_memory(tiny_lm_dir, data_dirs, tmp_path):
    args = ["prune", tiny_lm_dir, "--num-remove", "2", "--calib", "piqa:16", "--data-dir", data_dirs[0], "--batch-size", "2"]
    records = {}
    for placement in ("replica", "streamed"):
        result = run_cli(*args, "--placement", placement, "--out", tmp_path / placement)
        assert result.exit_code == 0, result.output
        assert f"placement: {placement} (asked for" in result.output
        records[placement] = json.loads((tmp_path / placement / "layershear.json").read_text())
    memory, streamed = records["replica"], records["streamed"]
    assert streamed["search"]["removed"] == memory["search"]["removed"]
    for a, b in zip(streamed["search"]["steps"], memory["search"]["steps"]):
        assert [c["relevance"] for c in a["candidates"]] == pytest.approx([c["relevance"] for c in b["candidates"]])
    # the full model, then one sweep per step (the current model and all its candidates)
    assert streamed["cost"]["streamed"]["sweeps"] == 3 and memory["cost"].get("streamed") is None
    assert json.loads((tmp_path / "streamed" / "config.json").read_text())["num_hidden_layers"] == 2
    bad = run_cli(*args, "--placement", "streamed", "--metric", "cosine", "--out", tmp_path / "cos")
    _assert_one_error_line(bad, "streamed blocks score by accuracy only")
    _assert_one_error_line(run_cli(*args, "--placement", "split", "--out", tmp_path / "split"),
                           "--placement split needs two or more GPUs")


def test_prune_by_a_baseline_metric(tiny_lm_dir, data_dirs, tmp_path):
    from transformers import AutoTokenizer

    from layershear.analysis.statistics import least_important_order
    from layershear.data.calibration import build_calibration
    from layershear.data.recipes import load_calibration
    from layershear.scoring.baselines import calibration_texts, cosine_scores

    out = tmp_path / "cos"
    result = run_cli("prune", tiny_lm_dir, "--num-remove", "1", "--calib", "piqa:16", "--data-dir", data_dirs[0],
                     "--metric", "cosine", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "layershear.json").read_text())
    assert record["search"]["metric"] == "cosine" and record["search"]["strategy"] == "one-shot"
    items = build_calibration(load_calibration("piqa:16"), data_dir=data_dirs[0]).items
    scores = cosine_scores(load(tiny_lm_dir), AutoTokenizer.from_pretrained(tiny_lm_dir), calibration_texts(items))
    assert record["search"]["removed"] == least_important_order(scores)[:1]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3


def test_metric_option_errors(tiny_lm_dir, data_dirs, tmp_path):
    result = run_cli("prune", tiny_lm_dir, "--num-remove", "1", "--calib", "piqa:16", "--data-dir", data_dirs[0],
                     "--metric", "accuracy", "--one-shot", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "--one-shot is for the baseline metrics" in result.output
    result = run_cli("prune", tiny_lm_dir, "--num-remove", "1", "--calib", "piqa:16", "--data-dir", data_dirs[0],
                     "--metric", "taylor", "--race", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "--race, --search, --beam and --compile apply to --metric accuracy" in result.output
    result = run_cli("analyze", tiny_lm_dir, "--calib", "piqa:16", "--tasks", "piqa:8", "--data-dir", data_dirs[0],
                     "--out", tmp_path / "r")
    assert result.exit_code == 2 and "task dependence needs at least 2" in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()
