"""Candidate stacking (layershear.engine.stacking): the candidates of a step share each forward pass."""

from __future__ import annotations

import pytest
import torch
from helpers import CharTokenizer, greedy_steps, load, mc_items, reuse_plan

from layershear.engine.config import EngineConfig
from layershear.engine.stacking import StackMember, _repeat, stack_groups, stacking
from layershear.model.surgery import remove_blocks
from layershear.scoring.scorer import Scorer

ONE_AT_A_TIME = EngineConfig(step_reuse=False, stack_tokens=0)
STACKED = EngineConfig(step_reuse=False)


@pytest.mark.parametrize("name", ["llama", "gpt2", "gpt_neox", "gemma2_old", "gemma3_text", "qwen2_swa", "phi3", "olmo2"])
def test_stacked_candidates_equal_one_at_a_time(tiny_checkpoints, name):
    model = load(tiny_checkpoints(name))
    stacked = Scorer(model, CharTokenizer(), mc_items(9), batch_size=4, engine=STACKED)
    single = Scorer(model, CharTokenizer(), mc_items(9), batch_size=4, engine=ONE_AT_A_TIME)
    for parent in (frozenset(), frozenset({2}), frozenset({2, 5})):
        blocks = [b for b in range(6) if b not in parent]
        got, want = stacked.children(parent, blocks), single.children(parent, blocks)
        for b in blocks:
            torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-5, rtol=1e-6)
            assert got[b].correct == want[b].correct
    assert stacked.engine.stats.stacked_runs == 6 + 5 + 4 and single.engine.stats.stacked_runs == 0
    assert stacked.engine.stats.forward_passes < single.engine.stats.forward_passes / 3
    # the same block-tokens, less the one-block runs of each step's last candidate (run, then bypassed)
    per_eval = sum(s.rows * s.width for s in single.engine.batch_shapes)
    assert single.engine.stats.block_tokens - stacked.engine.stats.block_tokens == 3 * per_eval


def test_step_reuse_states_stored_inside_stacks(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    stacked = Scorer(model, CharTokenizer(), mc_items(9), batch_size=4, cache_plan=reuse_plan())   # the default engine
    assert stacked.engine.config.stack_tokens and stacked.engine.step_reuse is not None
    single = Scorer(model, CharTokenizer(), mc_items(9), batch_size=4, engine=ONE_AT_A_TIME)
    for (_, got), (_, want) in zip(greedy_steps(stacked), greedy_steps(single)):
        for b, ev in got.items():
            torch.testing.assert_close(ev.loglikelihoods, want[b].loglikelihoods, atol=1e-5, rtol=1e-6)
    assert stacked.engine.stats.stacked_runs > 0 and stacked.engine.stats.reused_runs > 0
    assert stacked.engine.stats.block_tokens < single.engine.stats.block_tokens


def test_groups_are_consecutive_and_bounded_by_tokens():
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert stack_groups(order, 100, 1000) == [order]
    assert stack_groups(order, 100, 400) == [[9, 8, 7, 6], [5, 4, 3], [2, 1, 0]]    # 3 groups of <= 4, balanced
    assert stack_groups(order, 100, 1000, min_groups=2) == [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]
    assert stack_groups(order, 5000, 1000) == [[b] for b in order]                  # a candidate alone is too big
    assert stack_groups([3], 100, 1000, min_groups=2) == [[3]] and stack_groups([], 1, 1) == []


def test_only_batch_major_tensors_are_repeated():
    mask, cos, positions = torch.zeros(2, 1, 5, 5), torch.ones(2, 5, 4), torch.arange(5)
    memo: dict = {}
    out = _repeat({"attention_mask": mask, "position_embeddings": (cos, cos), "cache_position": positions,
                   "use_cache": False}, rows=2, copies=3, memo=memo)
    assert out["attention_mask"].shape == (6, 1, 5, 5) and out["position_embeddings"][0].shape == (6, 5, 4)
    assert out["position_embeddings"][0] is out["position_embeddings"][1]     # repeated once, then memoised
    assert out["cache_position"] is positions and out["use_cache"] is False


def test_a_stack_needs_a_member_at_the_first_block(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    member = StackMember(3, lambda batch: torch.zeros(1, 4, 8))
    with remove_blocks(model, {0, 1}), pytest.raises(ValueError, match="first kept block"):
        with stacking(model, [2, 3, 4, 5], [member]):
            pass
