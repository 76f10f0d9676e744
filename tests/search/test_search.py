"""Greedy and beam search on synthetic evaluators (no model): optimality, tie-breaks, bounds, errors."""

from __future__ import annotations

import itertools

import pytest

from layershear.errors import LayershearError, ScoringError
from layershear.scoring.accuracy import ModelAccuracy
from layershear.search import beam_search, num_to_remove

R = 0.25  # random accuracy of the synthetic calibration set


def _ev(drop: frozenset[int], acc: float) -> ModelAccuracy:
    return ModelAccuracy(removed=drop, accuracy=acc, random=R, gold_prob=acc, accuracy_by_task={"t": acc},
                      random_by_task={"t": R}, correct=())


class Counting:
    """evaluate(drop) = full - sum(cost) - interaction; counts calls per distinct drop set."""

    def __init__(self, cost: dict[int, float], *, full: float = 0.9, pair_penalty: dict | None = None):
        self.cost, self.full, self.pair = cost, full, pair_penalty or {}
        self.calls: dict[frozenset[int], int] = {}

    def __call__(self, drop: frozenset[int]) -> ModelAccuracy:
        self.calls[drop] = self.calls.get(drop, 0) + 1
        acc = self.full - sum(self.cost[b] for b in drop)
        acc -= sum(p for pair, p in self.pair.items() if pair <= drop)
        return _ev(drop, acc)


def test_greedy_removes_cheapest_blocks_in_order_with_paper_relevance():
    cost = {0: 0.30, 1: 0.01, 2: 0.05, 3: 0.02, 4: 0.20}
    evaluate = Counting(cost)
    result = beam_search(evaluate, num_blocks=5, num_remove=3)
    assert result.removed == (1, 3, 2)
    first = result.steps[0]
    # relevance of block 1 in the full model: 1 - (0.89 - 0.25) / (0.9 - 0.25)
    assert first.chosen.relevance == pytest.approx(1 - 0.64 / 0.65)
    assert [c.block_idx for c in first.candidates] == [0, 1, 2, 3, 4]
    # step 2 rescored against the model without block 1: 1 - (0.87 - 0.25) / (0.89 - 0.25)
    assert result.steps[1].chosen.relevance == pytest.approx(1 - 0.62 / 0.64)
    assert result.final.accuracy == pytest.approx(0.82)
    # greedy evaluates 1 + 5 + 4 + 3 distinct models
    assert len(evaluate.calls) == 13


def test_negative_relevance_when_removal_helps():
    evaluate = Counting({0: 0.1, 1: -0.05, 2: 0.1})
    result = beam_search(evaluate, num_blocks=3, num_remove=1)
    assert result.removed == (1,) and result.steps[0].chosen.relevance < 0


def test_ties_are_broken_deterministically_by_lowest_block_index():
    evaluate = Counting({0: 0.1, 1: 0.0, 2: 0.0, 3: 0.0})
    assert beam_search(evaluate, num_blocks=4, num_remove=2).removed == (1, 2)


def test_beam_finds_the_optimum_that_greedy_misses():
    # removing 0 alone is cheapest, but 0 interacts badly with everything; {1, 2} is the best pair
    cost = {0: 0.01, 1: 0.02, 2: 0.02, 3: 0.2}
    pair = {frozenset({0, 1}): 0.1, frozenset({0, 2}): 0.1, frozenset({0, 3}): 0.1}
    greedy = beam_search(Counting(cost, pair_penalty=pair), num_blocks=4, num_remove=2)
    beam = beam_search(Counting(cost, pair_penalty=pair), num_blocks=4, num_remove=2, width=3)
    best = max(itertools.combinations(range(4), 2),
               key=lambda d: Counting(cost, pair_penalty=pair)(frozenset(d)).accuracy)
    assert greedy.removed[0] == 0
    assert set(beam.removed) == set(best) == {1, 2}
    assert beam.final.accuracy > greedy.final.accuracy


def test_beam_is_never_worse_than_greedy_and_bounded():
    cost = {b: 0.01 * ((b * 7) % 5) for b in range(8)}
    pair = {frozenset({1, 3}): 0.05, frozenset({2, 6}): 0.04}
    for width in (1, 2, 4):
        evaluate = Counting(cost, pair_penalty=pair)
        result = beam_search(evaluate, num_blocks=8, num_remove=3, width=width)
        greedy = beam_search(Counting(cost, pair_penalty=pair), num_blocks=8, num_remove=3)
        assert result.final.accuracy >= greedy.final.accuracy - 1e-12
        assert len(evaluate.calls) <= 1 + width * (8 + 7 + 6)


def test_undefined_relevance_stops_with_a_clear_error():
    evaluate = Counting({0: 0.7, 1: 0.7, 2: 0.7}, full=0.9)   # after one removal acc 0.2 < r = 0.25
    with pytest.raises(ScoringError, match="not above random"):
        beam_search(Counting({0: 0.0, 1: 0.0}, full=0.2), num_blocks=2, num_remove=1)
    with pytest.raises(ScoringError, match="not above random"):
        beam_search(evaluate, num_blocks=3, num_remove=2)


@pytest.mark.parametrize(("n", "ratio", "expected"), [(30, 0.25, 8), (32, 0.25, 8), (10, 0.25, 3), (24, 0.1, 2)])
def test_num_blocks_to_drop_rounds_half_up(n, ratio, expected):
    assert num_to_remove(n, ratio=ratio) == expected


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"ratio": 0.0}, r"--ratio must be in \(0, 1\)"),
    ({"ratio": 1.0}, r"--ratio must be in \(0, 1\)"),
    ({"num": 0}, "Cannot remove 0 of 30"),
    ({"num": 30}, "Cannot remove 30 of 30"),
    ({}, "exactly one of"),
    ({"ratio": 0.5, "num": 3}, "exactly one of"),
])
def test_num_blocks_to_drop_rejects_bad_values(kwargs, match):
    with pytest.raises(LayershearError, match=match):
        num_to_remove(30, **kwargs)


def test_beam_drops_paths_at_chance_but_keeps_searching():
    # removing 0 first looks best, but {0, x} is at chance (0.2 < 0.25) for every x. With width 3 the
    # beam at depth 2 holds {1, 2} (0.7), {1, 3} (0.3) and a dead {0, 1} (0.2): the dead path is skipped.
    cost = {0: 0.0, 1: 0.1, 2: 0.1, 3: 0.5}
    pair = {frozenset({0, 1}): 0.6, frozenset({0, 2}): 0.6, frozenset({0, 3}): 0.2}
    result = beam_search(Counting(cost, pair_penalty=pair), num_blocks=4, num_remove=3, width=3)
    assert set(result.removed) == {1, 2, 3} and result.steps[1].after.accuracy == pytest.approx(0.7)
    with pytest.raises(ScoringError, match="not above random"):
        beam_search(Counting(cost, pair_penalty=pair), num_blocks=4, num_remove=3, width=1)


def test_ratio_rounding_is_exact_for_decimal_ratios():
    assert num_to_remove(50, ratio=0.29) == 15      # 14.5 rounds up (float math gives 14.499...)
    assert num_to_remove(25, ratio=0.58) == 15
