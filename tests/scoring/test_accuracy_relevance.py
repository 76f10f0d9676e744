"""acc / acc_norm on hand-computed log-likelihoods, and the relevance formula (paper eq.)."""

from __future__ import annotations

import math

import pytest
import torch

from layershear.data.benchmarks import MCItem
from layershear.errors import ScoringError
from layershear.scoring.accuracy import correct, item_scores, stderr
from layershear.scoring.relevance import relevance, relevance_or_none


def _item(lengths, gold=0, task="arc_easy"):
    n = len(lengths)
    return MCItem(task, 0, ("Q",) * n, tuple(" " + "x" * k for k in lengths), gold, tuple(lengths))


def test_acc_and_acc_norm_disagree_as_computed_by_hand():
    # choice 0: ll -4 over 2 chars (-2.0/char); choice 1: ll -3 over 6 chars (-0.5/char)
    item = _item([2, 6], gold=0)
    lls = torch.tensor([-4.0, -3.0], dtype=torch.float64)
    acc = item_scores([item], lls, measures=["acc"])[0]
    norm = item_scores([item], lls, measures=["acc_norm"])[0]
    assert acc.tolist() == [-4.0, -3.0]
    assert norm.tolist() == [-2.0, -0.5]
    assert correct([item], [acc]).tolist() == [False]       # argmax ll = 1 != gold
    item1 = _item([2, 6], gold=1)
    assert correct([item1], [norm]).tolist() == [True]


def test_ties_go_to_first_index_like_numpy_argmax():
    items = [_item([1, 1], gold=0), _item([1, 1], gold=1)]
    lls = torch.tensor([-1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    scores = item_scores(items, lls, measures=["acc", "acc"])
    assert correct(items, scores).tolist() == [True, False]


def test_item_scores_rejects_bad_input():
    item = _item([1, 1])
    with pytest.raises(ScoringError, match="Unknown measure 'f1'"):
        item_scores([item], torch.zeros(2, dtype=torch.float64), measures=["f1"])
    with pytest.raises(ScoringError, match="3 log-likelihoods"):
        item_scores([item], torch.zeros(3, dtype=torch.float64), measures=["acc"])


def test_relevance_formula():
    # 1 - max(0.6 - 0.25, 0) / max(0.8 - 0.25, 0) = 1 - 0.35/0.55
    assert relevance(0.6, 0.8, 0.25) == pytest.approx(1 - 0.35 / 0.55)
    assert relevance(0.8, 0.8, 0.25) == pytest.approx(0.0)          # no change
    assert relevance(0.2, 0.8, 0.25) == pytest.approx(1.0)          # at/below chance: clipped to 1
    assert relevance(0.9, 0.8, 0.25) == pytest.approx(1 - 0.65 / 0.55)   # removal helps: negative
    assert relevance(0.9, 0.8, 0.25) < 0


@pytest.mark.parametrize("acc_full", [0.25, 0.1])
def test_relevance_undefined_when_model_not_above_random(acc_full):
    with pytest.raises(ScoringError, match="not above random"):
        relevance(0.3, acc_full, 0.25)
    assert relevance_or_none(0.3, acc_full, 0.25) is None


def test_stderr_matches_sample_std_over_sqrt_n():
    x = [1.0, 0.0, 1.0, 1.0]
    mean = 0.75
    var = sum((v - mean) ** 2 for v in x) / 3
    assert stderr(x) == pytest.approx(math.sqrt(var) / 2)
    assert math.isnan(stderr([1.0]))


def test_exactly_at_chance_is_undefined_despite_float_rounding():
    # 10 five-choice items, 2 correct: acc 0.2, but r(D) sums to 0.19999999999999998
    from layershear.data.benchmarks import random_accuracy

    items = [_item([1] * 5) for _ in range(10)]
    r = random_accuracy(items)
    assert r != 0.2
    with pytest.raises(ScoringError, match="not above random"):
        relevance(0.3, 0.2, r)
