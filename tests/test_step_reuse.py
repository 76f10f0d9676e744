"""Step reuse (layershear.step_reuse): next-step candidates before the removed block start after it."""

from __future__ import annotations

import pytest
import torch
from conftest import load
from test_engine import CharTokenizer, _items, rigged_piqa

from layershear.engine import Engine
from layershear.prefix_cache import CachePlan
from layershear.scorer import Scorer
from layershear.step_reuse import StepReuse, child_key

ROOMY = 1 << 30      # budget the plan leaves for stored states


def _plan(where: str = "device", every: int = 1, budget: int = ROOMY) -> CachePlan:
    return CachePlan(where, every, 0, 0, budget)


def _greedy(scorer: Scorer, steps: int) -> list[tuple[frozenset[int], dict]]:
    """Greedy-order children evaluations (as GreedyPruner orders them), without the above-random check."""
    parent, out = frozenset(), []
    for _ in range(steps):
        children = scorer.evaluate_children(parent, [b for b in range(scorer.num_blocks) if b not in parent])
        out.append((parent, children))
        parent = min(children.values(), key=child_key).drop
    return out


@pytest.mark.parametrize("name", ["llama", "gpt_neox", "gemma2_old", "qwen2_swa", "olmo2"])
def test_reused_runs_equal_the_reference(tiny_checkpoints, name):
    model = load(tiny_checkpoints(name))
    items = _items(9)
    fast = Scorer(model, CharTokenizer(), items, batch_size=4, cache_plan=_plan())
    ref = Scorer(model, CharTokenizer(), items, batch_size=4, engine="reference")
    for parent, children in _greedy(fast, 4):
        want = ref.evaluate_children(parent, list(children))
        for b, ev in children.items():
            torch.testing.assert_close(ev.loglikelihoods, want[b].loglikelihoods, atol=1e-4, rtol=1e-6)
            assert ev.correct == want[b].correct
    assert fast.stats.reused_runs > 0


@pytest.mark.parametrize("name", ["llama", "gpt_neox"])    # removes 5, 0, 4 / 1, 3, 4
def test_reuse_skips_the_blocks_between_the_candidate_and_the_removed_block(tiny_checkpoints, name):
    model = load(tiny_checkpoints(name))
    items = _items(9)
    plain = Scorer(model, CharTokenizer(), items, batch_size=4, engine=Engine(step_reuse=False), cache_plan=_plan())
    reuse = Scorer(model, CharTokenizer(), items, batch_size=4, cache_plan=_plan())
    per_eval = sum(s.rows * s.width for s in reuse.batch_shapes)
    parent, previous = frozenset(), None
    for _ in range(3):
        blocks = [b for b in range(6) if b not in parent]
        plain_before, reuse_before, runs_before = plain.stats.block_tokens, reuse.stats.block_tokens, reuse.stats.reused_runs
        got, want = reuse.evaluate_children(parent, blocks), plain.evaluate_children(parent, blocks)
        for b in blocks:
            torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-5, rtol=1e-6)
        kept = [k for k in range(6) if k not in parent]
        (r,) = parent - previous if previous is not None else (6,)    # 6: no removal yet, nothing to reuse

        def runs(start, kept=kept):         # blocks a candidate runs from after ``start`` (a bypassed one at least)
            return max(1, len([k for k in kept if k > start]))
        reusable = [b for b in blocks if b < r]
        saved = sum(runs(b) - runs(r) for b in reusable) if previous is not None else 0
        assert (plain.stats.block_tokens - plain_before) - (reuse.stats.block_tokens - reuse_before) == per_eval * saved
        assert reuse.stats.reused_runs - runs_before == (len(reusable) if previous is not None else 0)
        previous, parent = parent, min(want.values(), key=child_key).drop
    assert reuse.stats.reused_runs > 0


@pytest.mark.parametrize(("where", "every"), [("host", 1), ("device", 3)])
def test_reuse_with_host_and_checkpointed_caches(tiny_checkpoints, where, every):
    model = load(tiny_checkpoints("qwen3"))
    items = _items(9)
    fast = Scorer(model, CharTokenizer(), items, batch_size=4, cache_plan=_plan(where, every))
    ref = Scorer(model, CharTokenizer(), items, batch_size=4, engine="reference")
    for parent, children in _greedy(fast, 3):
        want = ref.evaluate_children(parent, list(children))
        for b, ev in children.items():
            torch.testing.assert_close(ev.loglikelihoods, want[b].loglikelihoods, atol=1e-4, rtol=1e-6)
    assert fast.stats.reused_runs > 0


def test_no_budget_no_reuse_same_numbers(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    items = _items(9)
    tight = Scorer(model, CharTokenizer(), items, batch_size=4, cache_plan=_plan(budget=0))
    roomy = Scorer(model, CharTokenizer(), items, batch_size=4, cache_plan=_plan())
    for (_, got), (_, want) in zip(_greedy(tight, 3), _greedy(roomy, 3)):
        for b in got:
            torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-5, rtol=1e-6)
    assert tight.stats.reused_runs == 0 < roomy.stats.reused_runs
    assert roomy.stats.block_tokens < tight.stats.block_tokens


def test_beam_search_picks_the_same_blocks_as_the_reference(tiny_lm_dir):
    from layershear.search import GreedyPruner

    model, tokenizer, rigged = rigged_piqa(tiny_lm_dir)
    results, scorers = {}, {}
    for engine in ("fast", "reference"):
        scorers[engine] = Scorer(model, tokenizer, rigged, batch_size=8, engine=engine,
                                 cache_plan=_plan() if engine == "fast" else None)
        results[engine] = GreedyPruner(scorers[engine], beam_width=2).prune(2)
    assert scorers["fast"].step_reuse.keep == 2
    assert results["fast"].removed == results["reference"].removed
    for a, b in zip(results["fast"].steps, results["reference"].steps):
        assert [c.relevance for c in a.candidates] == pytest.approx([c.relevance for c in b.candidates])
    assert scorers["fast"].stats.reused_runs > 0


def test_store_lookup_eligibility_and_eviction():
    from layershear.prefix_cache import BlockInputs

    class Ev:
        def __init__(self, drop, accuracy):
            self.drop, self.accuracy, self.gold_prob = frozenset(drop), accuracy, 0.5

    def stored(drop, blocks):
        inputs = BlockInputs(frozenset(drop), stored=blocks)
        for k in blocks:
            inputs.states[k][0] = torch.zeros(1, 2, 1)       # 8 bytes, one batch
        return inputs

    reuse = StepReuse(block_bytes=8, budget_bytes=8 * 6, guesses=2)
    assert reuse.start(frozenset(), [0, 1, 2, 3]) == [3, 2, 1, 0]     # last block first
    assert reuse._eligible == {0, 1, 2}             # 6 states fit, 2 per candidate: the lowest blocks first
    reuse.record(3, Ev({3}, 0.6), None)
    assert reuse.targets(frozenset({2}), 2, capturable=[3]) == [3]
    reuse.record(2, Ev({2}, 0.7), stored({2}, [3]))
    assert reuse.targets(frozenset({1}), 1, capturable=[2, 3]) == [2, 3]   # the 2 best so far
    reuse.record(1, Ev({1}, 0.1), stored({1}, [2, 3]))
    reuse.record(0, Ev({0}, 0.1), stored({0}, [2, 3]))
    assert reuse.nbytes == 5 * 8
    # step 2 removes block 2: its candidate 0 (the model without {0, 2}) starts from the state entering 2
    # of the model without {0}; candidate 1 likewise; candidate 3 lies after 2 (prefix cache)
    reuse.start(frozenset({2}), [0, 1, 3])
    assert reuse.lookup(frozenset({0, 2}), after=0) == (2, reuse.states[(frozenset({0}), 2)])
    assert reuse.lookup(frozenset({2, 3}), after=3) is None
    # states entering 3 of models that kept block 2 can never match again: freed
    assert (frozenset({0}), 3) not in reuse.states and (frozenset({1}), 3) not in reuse.states
    assert reuse.nbytes == 2 * 8
    # removing block 1 next frees the state whose model kept block 1 (no later model matches it) and the
    # one of the model without {1}, which is now the parent's own (in the prefix cache)
    reuse.start(frozenset({1, 2}), [0, 3])
    assert not reuse.states and reuse.nbytes == 0
