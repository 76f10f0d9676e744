"""Step reuse (layershear.engine.step_reuse): later candidates start from states stored by earlier runs."""

from __future__ import annotations

import pytest
import torch
from helpers import CharTokenizer, greedy_steps, load, mc_items, reuse_plan, rigged_piqa

from layershear.engine.config import EngineConfig
from layershear.engine.prefix_cache import BlockInputs, CachePlan
from layershear.engine.step_reuse import StepReuse
from layershear.scoring.scorer import Scorer, SearchPlan

OFF = EngineConfig(step_reuse=False)


def _scorer(model, engine: str | EngineConfig = "fast", plan: CachePlan | None = None, items: int = 9) -> Scorer:
    return Scorer(model, CharTokenizer(), mc_items(items), batch_size=4, engine=engine,
                  cache_plan=plan or (reuse_plan() if engine != "reference" else None))


def _held_bytes(reuse: StepReuse) -> int:
    """Bytes of every tensor the store still references (not only those its keys name)."""
    tensors = {id(t): t for inp in reuse.states.values() for ts in inp.states.values() for t in ts.values()}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("name", ["llama", "gpt_neox", "gemma2_old", "qwen2_swa", "olmo2"])
def test_reused_runs_equal_the_reference_and_bitwise_the_engine_without_reuse(tiny_checkpoints, name):
    model = load(tiny_checkpoints(name))
    fast, plain, ref = _scorer(model), _scorer(model, OFF), _scorer(model, "reference")
    for (parent, got), (_, same) in zip(greedy_steps(fast), greedy_steps(plain)):
        want = ref.children(parent, list(got))
        for b, ev in got.items():
            assert torch.equal(ev.loglikelihoods, same[b].loglikelihoods)      # same blocks on the same batches
            torch.testing.assert_close(ev.loglikelihoods, want[b].loglikelihoods, atol=1e-4, rtol=1e-6)
            assert ev.correct == want[b].correct
    assert fast.engine.stats.reused_runs > 0 and fast.engine.stats.block_tokens < plain.engine.stats.block_tokens


@pytest.mark.parametrize("name", ["llama", "gpt_neox"])    # greedy removes 5, 0, 4 / 1, 3, 4
def test_reuse_skips_the_blocks_between_the_candidate_and_the_removed_block(tiny_checkpoints, name):
    model = load(tiny_checkpoints(name))
    # one candidate per pass: a bypassed last candidate then runs one block (stacked, none)
    plain, reuse = _scorer(model, EngineConfig(step_reuse=False, stack_tokens=0)), _scorer(model, EngineConfig(stack_tokens=0))
    reuse.expect(SearchPlan(depth=3))
    per_eval = sum(s.rows * s.width for s in reuse.engine.batch_shapes)
    parent, previous = frozenset(), None
    for _ in range(3):
        blocks = [b for b in range(6) if b not in parent]
        plain_before, reuse_before, runs_before = plain.engine.stats.block_tokens, reuse.engine.stats.block_tokens, reuse.engine.stats.reused_runs
        prefixes_before = reuse.engine.stats.reused_prefixes
        got, want = reuse.children(parent, blocks), plain.children(parent, blocks)
        assert all(torch.equal(got[b].loglikelihoods, want[b].loglikelihoods) for b in blocks)
        kept = [k for k in range(6) if k not in parent]
        (r,) = parent - previous if previous is not None else (6,)    # 6: no removal yet, nothing to reuse

        def runs(start, kept=kept):         # blocks a candidate runs from after ``start`` (a bypassed one at least)
            return max(1, len([k for k in kept if k > start]))
        saving = [b for b in blocks if b < r and runs(b) > runs(r)] if previous is not None else []
        # the prefix pass over the blocks after r is skipped when r's run stored their inputs
        prefix = len([k for k in kept if k > r]) if reuse.engine.stats.reused_prefixes > prefixes_before else 0
        assert (plain.engine.stats.block_tokens - plain_before) - (reuse.engine.stats.block_tokens - reuse_before) == \
            per_eval * (sum(runs(b) - runs(r) for b in saving) + prefix)
        assert reuse.engine.stats.reused_runs - runs_before == len(saving)
        previous, parent = parent, min(want.values(), key=lambda a: a.rank_key).removed
    assert reuse.engine.stats.reused_runs > 0


def test_a_state_stored_two_steps_earlier_serves_a_removal_below_the_previous_one(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    plain, reuse = _scorer(model, OFF), _scorer(model)
    reuse.engine.step_reuse.extra_guesses = 5           # step 1 stores its input of every later block
    reuse.expect(SearchPlan(depth=3))
    per_eval = sum(s.rows * s.width for s in reuse.engine.batch_shapes)
    for parent in (frozenset(), frozenset({5})):  # remove 5, then 3
        for scorer in (plain, reuse):
            scorer.children(parent, [b for b in range(6) if b not in parent])
    before = plain.engine.stats.block_tokens, reuse.engine.stats.block_tokens, reuse.engine.stats.reused_runs, reuse.engine.stats.reused_prefixes
    parent = frozenset({3, 5})
    got, want = reuse.children(parent, [0, 1, 2, 4]), plain.children(parent, [0, 1, 2, 4])
    assert all(torch.equal(got[b].loglikelihoods, want[b].loglikelihoods) for b in got)
    # step 2 ran candidates 0 and 1 from states past block 3, so only step 1's runs computed their input
    # of block 3. From it, candidate 0 runs block 4 alone instead of 1, 2, 4 (2 saved) and candidate 1
    # instead of 2, 4 (1 saved); candidate 2 runs block 4 either way. Step 2's candidate 3 stored its
    # input of block 4, so the prefix cache of {3, 5} needs no pass over block 4 (1 saved)
    assert reuse.engine.stats.reused_runs - before[2] == 2
    assert reuse.engine.stats.reused_prefixes - before[3] == 1
    assert (plain.engine.stats.block_tokens - before[0]) - (reuse.engine.stats.block_tokens - before[1]) == per_eval * 4


@pytest.mark.parametrize(("where", "every"), [("host", 1), ("device", 3)])
def test_reuse_with_host_and_checkpointed_caches(tiny_checkpoints, where, every):
    model = load(tiny_checkpoints("qwen3"))
    fast, plain, ref = _scorer(model, plan=reuse_plan(where, every)), _scorer(model, OFF, reuse_plan(where, every)), \
        _scorer(model, "reference")
    for (parent, got), (_, same) in zip(greedy_steps(fast, order=[5, 2, 4, 0]), greedy_steps(plain, order=[5, 2, 4, 0])):
        want = ref.children(parent, list(got))
        for b, ev in got.items():
            assert torch.equal(ev.loglikelihoods, same[b].loglikelihoods)
            torch.testing.assert_close(ev.loglikelihoods, want[b].loglikelihoods, atol=1e-4, rtol=1e-6)
    assert fast.engine.stats.reused_runs > 0 and fast.engine.stats.block_tokens < plain.engine.stats.block_tokens


@pytest.mark.parametrize("states", [0, 2, 5])
def test_budget_bounds_the_memory_held(tiny_checkpoints, states):
    model = load(tiny_checkpoints("llama"))
    probe = _scorer(model)
    block_bytes = probe.engine.step_reuse.block_bytes
    scorer = _scorer(model, plan=reuse_plan(budget=states * block_bytes))
    peak = 0
    for _ in greedy_steps(scorer, order=[5, 3, 4, 0]):
        assert _held_bytes(scorer.engine.step_reuse) == scorer.engine.step_reuse.nbytes
        peak = max(peak, scorer.engine.step_reuse.nbytes)
    assert peak <= states * block_bytes
    assert (scorer.engine.stats.reused_runs > 0) == (states > 0)
    assert scorer.engine.stats.cache_bytes >= peak


def test_a_single_scoring_pass_stores_nothing(tiny_checkpoints):
    scorer = _scorer(load(tiny_checkpoints("llama")))
    scorer.score_blocks() if scorer.accuracy().above_random else scorer.children(frozenset(), range(6))
    assert not scorer.engine.step_reuse.states


def test_beam_search_picks_the_same_blocks_as_the_reference(tiny_lm_dir):
    from layershear.search import GreedyPruner

    model, tokenizer, rigged = rigged_piqa(tiny_lm_dir)
    results, scorers = {}, {}
    for engine in ("fast", "reference"):
        scorers[engine] = Scorer(model, tokenizer, rigged, batch_size=8, engine=engine,
                                 cache_plan=reuse_plan() if engine == "fast" else None)
        results[engine] = GreedyPruner(scorers[engine], beam_width=2).prune(2)
    assert scorers["fast"].engine.step_reuse.keep == 2 and scorers["fast"].engine.step_reuse.until_depth == 2
    assert results["fast"].removed == results["reference"].removed
    for a, b in zip(results["fast"].steps, results["reference"].steps):
        assert [c.relevance for c in a.candidates] == pytest.approx([c.relevance for c in b.candidates])


def _key(removed, accuracy):
    """The rank key of a child with this accuracy (gold probability 0.5), as ModelAccuracy.rank_key."""
    return (-accuracy, -0.5, tuple(sorted(removed)))


def _stored(drop, blocks):
    inputs = BlockInputs(frozenset(drop), stored=blocks)
    for k in blocks:
        inputs.states[k][0] = torch.zeros(1, 2, 1)       # 8 bytes, one batch
    return inputs


def test_store_lookup_eligibility_and_eviction():
    reuse = StepReuse(block_bytes=8, budget_bytes=8 * 6, extra_guesses=1, prefix_states=False)
    reuse.until_depth = 3
    assert reuse.start(frozenset(), [0, 1, 2, 3]) == [3, 2, 1, 0]     # last block first
    assert reuse._eligible == {0, 1, 2}             # 6 states fit, 2 per candidate: the lowest blocks first
    reuse.record(3, _key({3}, 0.6), None)
    assert reuse.targets(frozenset({2}), 2, capturable=[3], num_blocks=4) == []   # nothing between 2 and 3
    reuse.record(2, _key({2}, 0.7), None)
    assert reuse.targets(frozenset({1}), 1, capturable=[2, 3], num_blocks=4) == [3]   # 2 best so far: 2, 3
    reuse.record(1, _key({1}, 0.1), _stored({1}, [3]))
    assert reuse.targets(frozenset({0}), 0, capturable=[1, 2, 3], num_blocks=4) == [2, 3]
    reuse.record(0, _key({0}, 0.1), _stored({0}, [2, 3]))
    assert reuse.nbytes == _held_bytes(reuse) == 3 * 8
    # step 2 removes block 2: candidate 0 (the model without {0, 2}) starts from the state entering 2 of
    # the model without {0}; states entering 3 of models that kept block 2 can never match again: freed
    reuse.start(frozenset({2}), [0, 1, 3])
    assert reuse.lookup(frozenset({0, 2}), after=0) == (2, reuse.states[(frozenset({0}), 2)])
    assert reuse.lookup(frozenset({1, 2}), after=1) is None
    assert list(reuse.states) == [(frozenset({0}), 2)] and reuse.nbytes == _held_bytes(reuse) == 8
    assert reuse._eligible == {0, 1, 3}          # room for 5 more states, 2 per candidate
    reuse.start(frozenset({0, 2}), [1, 3])      # children at depth 3 = until_depth: nothing reads their states
    assert reuse._eligible == set()


def test_beam_eviction_uses_the_previous_depths_parents():
    reuse = StepReuse(block_bytes=8, budget_bytes=8 * 10, keep=2)
    reuse.until_depth = 4
    reuse.start(frozenset(), [0, 1, 2, 3])
    reuse.record(0, _key({0}, 0.5), _stored({0}, [2, 3]))
    reuse.start(frozenset({2}), [0, 1, 3])        # depth 1: judged against the depth-0 parent, all alive
    reuse.start(frozenset({1}), [0, 2, 3])
    assert len(reuse.states) == 2
    # depth 2: judged against the beam of depth 1, {2} and {1}, one depth late. ({0}, 3) is dead: each of
    # them has a block below 3 that its model kept. ({0}, 2) still matches descendants of {2}
    reuse.start(frozenset({1, 2}), [0, 3])
    assert list(reuse.states) == [(frozenset({0}), 2)]


def test_a_likely_removal_stores_the_next_prefix():
    reuse = StepReuse(block_bytes=8, budget_bytes=8 * 20, extra_guesses=0)     # one guess per step
    reuse.until_depth = 3
    reuse.start(frozenset(), [0, 1, 2, 3])
    # first step, no ranking yet: any candidate may be removed, so each stores its inputs of the blocks after it
    assert reuse.targets(frozenset({1}), 1, capturable=[2, 3], num_blocks=4) == [2, 3]
    reuse.record(1, _key({1}, 0.9), _stored({1}, [2, 3]))
    for b, acc in ((3, 0.1), (2, 0.5), (0, 0.0)):
        reuse.record(b, _key({b}, acc), None)
    reuse.start(frozenset({1}), [0, 2, 3])        # block 1 removed: its states are the new prefix
    taken = reuse.take_prefix(frozenset({1}), [2, 3])
    assert sorted(taken) == [2, 3] and taken[2][0].shape == (1, 2, 1)
    assert reuse.states == {}                     # taken out of the store
    # later steps: only the previous parent's best child (block 2) stores its states after it
    assert reuse.targets(frozenset({1, 2}), 2, capturable=[3], num_blocks=4) == [3]
    assert reuse.targets(frozenset({0, 1}), 0, capturable=[2, 3], num_blocks=4) == []
