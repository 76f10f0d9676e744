"""Block-streamed (layer-major) scoring equals in-memory scoring, with at most two blocks' weights resident."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from helpers import CharTokenizer, load, mc_items, rigged_piqa

import layershear.engine.streamed as streamed_module
from layershear.engine.spill import spilled
from layershear.engine.streamed import StreamPlan, plan_streaming
from layershear.errors import CheckpointError, LayershearError
from layershear.model.arch import decoder_blocks
from layershear.model.streaming import HostWeights, ShardWeights, streamed_model
from layershear.scoring.racing import RaceSettings
from layershear.scoring.scorer import Scorer
from layershear.search import GreedyPruner

ARCH_NAMES = ["llama", "llama_tied", "mistral", "gpt2", "gpt_neox", "gemma2_old", "gemma3_text", "qwen2_swa", "qwen3",
              "phi3", "olmo2"]
CPU = torch.device("cpu")
PARENTS = (frozenset(), frozenset({2}), frozenset({2, 4}), frozenset({0, 2, 4}))


def _block_bytes(model) -> int:
    return sum(p.numel() * 4 for p in decoder_blocks(model)[0].parameters())


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_streamed_from_disk_shards_equals_in_memory(tiny_checkpoints, name):
    path = tiny_checkpoints(name)          # several 20 KB shards
    memory = Scorer(load(path), CharTokenizer(), mc_items(), batch_size=4)
    model, shards = streamed_model(path, dtype=torch.float32, device=CPU)
    assert all(p.device.type == "meta" for p in decoder_blocks(model).parameters())
    streamed = Scorer(model, CharTokenizer(), mc_items(), batch_size=4, weights=shards)
    for parent in PARENTS:
        blocks = [b for b in range(6) if b not in parent]
        got, want = streamed.children(parent, blocks), memory.children(parent, blocks)
        for b in blocks:
            torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-5, rtol=0)
            assert got[b].correct == want[b].correct
    engine = streamed.engine
    # one sweep per step: the current model and its candidates; each needed block loaded once per sweep
    assert engine.sweeps == len(PARENTS)
    assert engine.block_loads == sum(6 - len(p) for p in PARENTS)
    assert 0 < engine.peak_block_bytes <= 2 * _block_bytes(model)
    assert all(p.device.type == "meta" for p in decoder_blocks(model).parameters())     # all released


def test_streamed_greedy_picks_the_same_blocks(tiny_lm_dir):
    model, tokenizer, rigged = rigged_piqa(tiny_lm_dir)
    want = GreedyPruner(Scorer(model, tokenizer, rigged, batch_size=8)).prune(2)
    streamed, shards = streamed_model(tiny_lm_dir, dtype=torch.float32, device=CPU)
    got = GreedyPruner(Scorer(streamed, tokenizer, rigged, batch_size=8, weights=shards)).prune(2)
    assert got.removed == want.removed
    for a, b in zip(got.steps, want.steps):
        assert [c.relevance for c in a.candidates] == pytest.approx([c.relevance for c in b.candidates], abs=1e-9)


def test_host_weights_and_lm_eval_rows_and_racing(tiny_checkpoints):
    path = tiny_checkpoints("qwen3")
    items = mc_items(12)
    race = RaceSettings(slices=3, delta=0.2)
    for engine in ("fast", "reference"):        # packed prefix trees / lm-eval's one request per row
        memory = Scorer(load(path), CharTokenizer(), items, batch_size=4, engine=engine, race=race)
        model = load(path)
        host = HostWeights(model)               # the loaded model's blocks move to host memory
        assert all(p.device.type == "meta" for p in decoder_blocks(model).parameters())
        streamed = Scorer(model, CharTokenizer(), items, batch_size=4, engine=engine, race=race, weights=host)
        for parent in PARENTS[:2]:
            blocks = [b for b in range(6) if b not in parent]
            got, want = streamed.children(parent, blocks), memory.children(parent, blocks)
            assert {b: a.exact for b, a in got.items()} == {b: a.exact for b, a in want.items()}
            for b in blocks:
                assert got[b].correct == want[b].correct
                if got[b].exact:
                    torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-5, rtol=0)


def test_a_small_budget_splits_the_models_over_sweeps(tiny_checkpoints):
    path = tiny_checkpoints("gemma3_text")
    memory = Scorer(load(path), CharTokenizer(), mc_items(), batch_size=4)
    model, shards = streamed_model(path, dtype=torch.float32, device=CPU)
    plan = plan_streaming(1000, 7, CPU, free=(4000, 4000))          # room for 2 models' states
    assert plan == StreamPlan("device", 2, 1000, 2000)
    streamed = Scorer(model, CharTokenizer(), mc_items(), batch_size=4, weights=shards, stream_plan=plan)
    got, want = streamed.children(frozenset(), range(6)), memory.children(frozenset(), range(6))
    for b in range(6):
        torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-5, rtol=0)
    assert streamed.engine.sweeps == 4                  # 7 models (the full one too), 2 per sweep


def test_stream_plan_follows_free_memory():
    gpu = torch.device("cuda")
    assert plan_streaming(10, 5, gpu, free=(1000, 1000)).where == "device"
    assert plan_streaming(100, 5, gpu, free=(400, 10_000)) == StreamPlan("device", 2, 100, 200)   # sweeps of 2
    assert plan_streaming(100, 5, gpu, free=(100, 10_000)) == StreamPlan("host", 5, 100, 5000)    # not even one
    assert plan_streaming(100, 5, gpu, free=(100, 300)) == StreamPlan("host", 1, 100, 150)
    assert plan_streaming(100, 5, gpu, free=(100, 100), disk=("/spill", 1000)) == StreamPlan("disk", 5, 100, 500,
                                                                                            "/spill")
    assert plan_streaming(100, 5, CPU, free=(300, 300)) == StreamPlan("device", 1, 100, 150)     # at least one
    assert plan_streaming(100, 5, CPU, free=(100, 10_000), disk=("/spill", 300)) == StreamPlan("disk", 1, 100, 150,
                                                                                              "/spill")
    with pytest.raises(LayershearError, match=r"fit neither in memory .* nor in /spill .* set LAYERSHEAR_SPILL_DIR"):
        plan_streaming(100, 5, CPU, free=(100, 100), disk=("/spill", 100))


def test_states_spilled_to_disk_give_the_same_numbers(tiny_checkpoints, tmp_path, monkeypatch):
    path = tiny_checkpoints("llama")
    memory = Scorer(load(path), CharTokenizer(), mc_items(), batch_size=4)
    model, shards = streamed_model(path, dtype=torch.float32, device=CPU)
    plan = plan_streaming(1000, 7, CPU, free=(1000, 1000), disk=(str(tmp_path), 10_000))
    assert plan == StreamPlan("disk", 5, 1000, 5000, str(tmp_path))
    files = []

    def spilling(state, folder):
        out = spilled(state, folder)
        files.append(os.listdir(folder))
        assert torch.equal(out, state.cpu()) and out.untyped_storage().filename is not None     # file-backed
        return out
    monkeypatch.setattr(streamed_module, "spilled", spilling)
    streamed = Scorer(model, CharTokenizer(), mc_items(), batch_size=4, weights=shards, stream_plan=plan)
    got, want = streamed.children(frozenset(), range(6)), memory.children(frozenset(), range(6))
    for b in range(6):
        torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-5, rtol=0)
    assert streamed.engine.sweeps == 2                   # 7 models, 5 per sweep
    assert len(files) > 6 and not any(files)            # every state spilled; each file unlinked at once
    assert "on disk (" in streamed.engine.stream_plan.describe()


def test_spilled_states_and_their_errors(tmp_path, monkeypatch):
    state = torch.randn(3, 5, 8).to(torch.bfloat16)
    out = spilled(state, str(tmp_path))
    assert out.dtype == torch.bfloat16 and torch.equal(out, state) and not os.listdir(tmp_path)
    assert spilled(torch.empty(0, 4), str(tmp_path)).shape == (0, 4)
    with pytest.raises(LayershearError, match="cannot write spilled hidden states to .*missing.*LAYERSHEAR_SPILL_DIR"):
        spilled(state, str(tmp_path / "missing"))

    def full(_fd, _offset, _length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(LayershearError, match="no room for 0.0 MiB of spilled hidden states .*No space left"):
        spilled(state, str(tmp_path))
    assert not os.listdir(tmp_path)                      # nothing left behind


def test_missing_block_weights_are_a_clear_error(tiny_checkpoints, tmp_path):
    path = tiny_checkpoints("llama")
    model, _ = streamed_model(path, dtype=torch.float32, device=CPU)
    with pytest.raises(CheckpointError, match="no safetensors weights"):
        ShardWeights(tmp_path, "model.layers.")
    empty = ShardWeights(path, "no.such.prefix.")
    scorer = Scorer(model, CharTokenizer(), mc_items(), batch_size=4, weights=empty)
    with pytest.raises(CheckpointError, match="the weights of block 0 lack"):
        scorer.accuracy()
    assert all(p.device.type == "meta" for p in decoder_blocks(model).parameters())
