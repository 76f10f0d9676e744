"""``layershear plan``: the counted work of a search, the probe, the CLI."""

from __future__ import annotations

import json

import pytest
from helpers import load, run_cli
from transformers import AutoTokenizer

from layershear.data.benchmarks import load_split
from layershear.engine.config import EngineConfig
from layershear.errors import LayershearError
from layershear.inputs import DataSource
from layershear.pipeline.plan import plan_job, search_block_tokens, split_seconds, streamed_block_tokens
from layershear.scoring.scorer import Scorer
from layershear.search import GreedyPruner


def test_search_block_tokens_by_hand():
    # N = 4, one step: reference 4 (full) + 4 candidates x 3 blocks; fast 4 (full, caching) + 3+2+1+0 + 1 bypass
    assert search_block_tokens(4, 1, 1, 10) == (160, 110)
    # a second step of a beam of 2: + 2 x 3 x 2 blocks; fast + 2 x (3 caching + 2+1+0 + 1)
    assert search_block_tokens(4, 2, 2, 10) == (160 + 120, 110 + 140)


@pytest.mark.parametrize("num_remove", [1, 2])
def test_counted_work_matches_what_the_engines_compute(tiny_lm_dir, data_dirs, num_remove):
    model, tokenizer = load(tiny_lm_dir), AutoTokenizer.from_pretrained(tiny_lm_dir)
    items = load_split("piqa", "validation", source="local", data_dir=data_dirs[0])[:16]
    ref = Scorer(model, tokenizer, items, engine="reference")
    GreedyPruner(ref).prune(num_remove)
    padded = sum(s.rows * s.width for s in ref.engine.batch_shapes)
    assert ref.engine.stats.block_tokens == search_block_tokens(ref.num_blocks, num_remove, 1, padded)[0]
    plain = Scorer(model, tokenizer, items, engine=EngineConfig(step_reuse=False, stack_tokens=0))
    GreedyPruner(plain).prune(num_remove)
    packed = sum(s.rows * s.width for s in plain.engine.batch_shapes)      # the fast layout packs rows
    bound = search_block_tokens(plain.num_blocks, num_remove, 1, packed)[1]
    assert bound * (0.99 if num_remove == 1 else 0.7) <= plain.engine.stats.block_tokens <= bound


def test_plan_job_and_the_cli(tiny_lm_dir, data_dirs, tmp_path):
    plan = plan_job(tiny_lm_dir, calib="piqa:16", num_remove=2, data=DataSource("local", data_dirs[0]), probe_batches=1)
    assert (plan.num_blocks, plan.num_remove, plan.calibration_docs, plan.models) == (4, 2, 16, 1 + 4 + 3)
    assert plan.probe_batches == 1 and plan.probe_block_tokens > 0 and plan.probe_seconds > 0
    assert plan.fast_block_tokens < plan.reference_block_tokens
    assert 0 < plan.estimated_seconds_fast <= plan.estimated_seconds_reference
    assert plan.weights_bytes > 4 * plan.block_weights_bytes > 0
    out = tmp_path / "plan.json"
    result = run_cli("plan", tiny_lm_dir, "--calib", "piqa:16", "--num-remove", "2", "--data-dir", data_dirs[0],
                     "--search", "beam", "--beam", "2", "--json", out)
    assert result.exit_code == 0, result.output
    assert "estimated time" in result.stdout and "Plan: remove 2 of 4 blocks" in result.stdout
    record = json.loads(out.read_text())
    assert record["width"] == 2 and record["models"] == 1 + 2 * 4 + 2 * 3      # beam_plan: an upper bound
    with pytest.raises(LayershearError, match="beam width 2 applies"):
        plan_job(tiny_lm_dir, calib="piqa:16", num_remove=1, beam_width=2, data=DataSource("local", data_dirs[0]))


@pytest.mark.parametrize("per", [None, 1, 3])           # models per sweep: all, one, some
@pytest.mark.parametrize("num_remove", [1, 2])
def test_streamed_count_is_what_the_streamed_engine_computes(tiny_lm_dir, data_dirs, num_remove, per):
    import torch

    from layershear.engine.streamed import StreamPlan
    from layershear.model.streaming import streamed_model

    model, shards = streamed_model(tiny_lm_dir, dtype=torch.float32, device=torch.device("cpu"))
    items = load_split("piqa", "validation", source="local", data_dir=data_dirs[0])[:16]
    plan = StreamPlan("device", per, 1, 1) if per else None
    scorer = Scorer(model, AutoTokenizer.from_pretrained(tiny_lm_dir), items, weights=shards, stream_plan=plan)
    GreedyPruner(scorer).prune(num_remove)
    padded = sum(s.rows * s.width for s in scorer.engine.batch_shapes)
    tokens, loads = streamed_block_tokens(scorer.num_blocks, num_remove, 1, padded, per)
    assert (scorer.engine.stats.block_tokens, scorer.engine.block_loads) == (tokens, loads)


def test_plan_of_a_streamed_job_on_several_devices(tiny_lm_dir, data_dirs):
    data = DataSource("local", data_dirs[0])
    streamed = plan_job(tiny_lm_dir, calib="piqa:16", num_remove=2, data=data, probe_batches=1, placement="streamed",
                        devices=2)
    assert (streamed.placement, streamed.placement_on_devices, streamed.devices) == ("streamed", "streamed", 2)
    assert streamed.probe_fetch_seconds_per_block > 0 and streamed.estimated_seconds > 0
    assert streamed.streamed_block_loads == 4 + 4 + 3 and "streamed blocks" in streamed.cache
    one = plan_job(tiny_lm_dir, calib="piqa:16", num_remove=2, data=data, probe_batches=1, devices=1)
    four = plan_job(tiny_lm_dir, calib="piqa:16", num_remove=2, data=data, probe_batches=1, devices=4)
    assert one.placement == four.placement_on_devices == "replica"          # a tiny model fits anywhere
    assert four.estimated_seconds == pytest.approx(four.estimated_seconds_fast / 4, rel=1e-2, abs=2e-3)
    result = run_cli("plan", tiny_lm_dir, "--calib", "piqa:16", "--num-remove", "1", "--data-dir", data_dirs[0],
                     "--placement", "streamed", "--gpus", "2")
    assert result.exit_code == 0, result.output
    assert "estimated time, 2 devices" in result.stdout and "to fetch a block" in result.stdout


def test_a_split_model_is_estimated_as_a_pipeline_of_its_batches():
    assert split_seconds(80.0, 1, 35) == 80.0                        # one GPU: the work itself
    assert split_seconds(80.0, 8, 35) == pytest.approx(80.0 / 8 * 42 / 35)      # 35 + 8 - 1 stages of 1/8
    assert split_seconds(80.0, 2, 1) == 80.0                          # one batch: the GPUs take turns
