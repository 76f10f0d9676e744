"""The engine serves arbitrary removal sets (a search's jumps, evolutionary offspring): each starts from
the deepest cached block input it shares, and computes what a full forward computes."""

from __future__ import annotations

import pytest
import torch
from helpers import CharTokenizer, load, mc_items, reuse_plan

from layershear.errors import ScoringError
from layershear.scoring.racing import RaceSettings
from layershear.scoring.scorer import Scorer
from layershear.search import AStarSettings, EvolveSettings, GreedyPruner


def _scorer(model, engine="fast", **kw) -> Scorer:
    return Scorer(model, CharTokenizer(), mc_items(12), batch_size=4, engine=engine,
                  cache_plan=reuse_plan() if engine != "reference" else None, **kw)


def _close(a, b) -> None:
    torch.testing.assert_close(a.loglikelihoods, b.loglikelihoods, atol=1e-4, rtol=1e-6)
    assert a.correct == b.correct


@pytest.mark.parametrize("name", ["llama", "gemma2_old", "qwen2_swa"])
def test_sets_outside_the_children_start_from_shared_inputs_and_equal_the_reference(tiny_checkpoints, name):
    model = load(tiny_checkpoints(name))
    fast, ref = _scorer(model), _scorer(model, "reference")
    fast.children(frozenset(), range(fast.num_blocks))          # caches the full model's block inputs
    before = fast.engine.stats.block_tokens
    sets = [frozenset(s) for s in ({3, 5}, {2, 4}, {4, 5}, {1, 3})]
    for s in sets:
        _close(fast.accuracy(s), ref.accuracy(s))
    assert fast.engine.stats.shared_starts == len(sets)
    per_block = sum(sh.rows * sh.width for sh in fast.engine.batch_shapes)
    ran = (fast.engine.stats.block_tokens - before) // per_block
    # each set runs only its blocks after its lowest removed block (none after it: the block before, bypassed)
    assert ran == sum(max(1, len([b for b in range(fast.num_blocks) if b not in s and b >= min(s)])) for s in sets)
    assert ran < len(sets) * (fast.num_blocks - 2)


def test_children_of_a_parent_that_is_no_child_of_the_last_one(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    fast, ref = _scorer(model), _scorer(model, "reference")
    for parent in (frozenset({1}), frozenset({3}), frozenset({1, 4}), frozenset({0, 5})):   # A*-style jumps
        blocks = [b for b in range(fast.num_blocks) if b not in parent]
        got, want = fast.children(parent, blocks), ref.children(parent, blocks)
        for b in blocks:
            _close(got[b], want[b])
        assert fast.engine._prefix.removed == parent


def test_staged_selection_scores_survivors_exactly(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    staged, ref = _scorer(model, slices=4), _scorer(model, "reference")
    sets = [frozenset(s) for s in ({1, 4}, {2, 5}, {1, 3}, {1, 2}, {0, 3})]
    staged.anchor(frozenset({1, 5}))
    got = staged.select(sets, stages=((1, 3), (2, 1)))
    survivors = [s for s, a in got.items() if a.exact]
    assert len(survivors) == 1
    # {1, 4}, {1, 3}, {1, 2} share the blocks below their first difference from the anchored {1, 5}
    assert staged.engine.stats.shared_starts == 3
    _close(got[survivors[0]], ref.accuracy(survivors[0]))
    for s, a in got.items():
        if not a.exact:
            assert len(a.correct) < len(staged.items)
            assert staged.estimate(s) is a
    partial_first = [s for s, a in got.items() if not a.exact and len(a.correct) == staged.item_slice.count(0)]
    assert len(partial_first) == 2                 # 5 -> 3 after the first slice, 3 -> 1 after two
    with pytest.raises(ScoringError, match="needs the calibration set in slices"):
        _scorer(model).select([frozenset({0})], stages=((1, 1),))


def test_staged_selection_with_racing_drops_offspring_the_reference_beats(tiny_checkpoints, monkeypatch):
    import layershear.scoring.scorer as scorer_module

    model = load(tiny_checkpoints("llama"))
    scorer = _scorer(model, race=RaceSettings(slices=4))
    reference = scorer.accuracy(frozenset())
    calls = []

    def reference_wins(correct, **kw):      # stands in for the bound: the reference beats every offspring
        calls.append(kw["delta"])
        return {b: ({None} if b is not None else set()) for b in correct}

    monkeypatch.setattr(scorer_module, "better_than", reference_wins)
    got = scorer.select([frozenset({0, 1}), frozenset({2, 3})], stages=((3, 2),), reference=reference)
    assert all(not a.exact and len(a.correct) == scorer.item_slice.count(0) for a in got.values())
    assert calls[0] == pytest.approx(0.05 / (2 * 4))     # delta split over offspring x looks


def _rigged(model):
    """12 items with gold set to the full model's own choice on 3 of 4 (above chance)."""
    import dataclasses

    from layershear.scoring.accuracy import item_scores

    items = mc_items(12)
    scorer = Scorer(model, CharTokenizer(), items)
    picks = [int(s.argmax()) for s in item_scores(items, scorer.engine.run(), measures=scorer.measures)]
    return [dataclasses.replace(it, gold=p if i % 4 else (p + 1) % 3) for i, (it, p) in enumerate(zip(items, picks))]


@pytest.mark.parametrize("search", ["astar", "evolve"])
def test_astar_and_evolve_on_a_real_engine_report_exact_finals_and_cost(tiny_checkpoints, search):
    model = load(tiny_checkpoints("llama"))
    items = _rigged(model)
    scorer = Scorer(model, CharTokenizer(), items, batch_size=4, slices=4 if search == "evolve" else None)
    result = GreedyPruner(scorer, search=search, astar=AStarSettings(), evolve=EvolveSettings(offspring=4, slices=4,
                          stages=((1, 2), (2, 1)))).prune(2)
    ref = Scorer(model, CharTokenizer(), items, batch_size=4, engine="reference")
    assert len(result.removed) == 2 and result.final.exact and result.strategy == search
    assert result.final.accuracy == ref.accuracy(result.removed).accuracy
    assert result.cost.evaluations == scorer.evaluations and result.cost.block_tokens == scorer.engine.stats.block_tokens
    assert result.cost.documents == scorer.documents_scored > 0 and result.cost.seconds > 0
    if search == "evolve":
        assert result.cost.generations >= 1
    again = GreedyPruner(Scorer(model, CharTokenizer(), items, batch_size=4, slices=4 if search == "evolve" else None),
                         search=search, evolve=EvolveSettings(offspring=4, slices=4, stages=((1, 2), (2, 1)))).prune(2)
    assert again.removed == result.removed and again.refinements == result.refinements
