"""Racing: the confidence bound, slicing, and the race loop inside the Scorer."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import CharTokenizer, load, mc_items

import layershear.scoring.scorer as scorer_module
from layershear.scoring.racing import RaceSettings, eliminated, item_slices, per_test_delta, serfling_radius
from layershear.scoring.scorer import Scorer
from layershear.search import GreedyPruner


def test_serfling_radius_by_hand():
    # R sqrt((1 - (n-1)/N) ln(1/delta) / (2n)) with R=2, n=100, N=400, delta=0.01
    want = 2 * math.sqrt((1 - 99 / 400) * math.log(100) / 200)
    assert serfling_radius(100, 400, 0.01) == pytest.approx(want)
    assert serfling_radius(400, 400, 0.01) < serfling_radius(200, 400, 0.01) < serfling_radius(100, 400, 0.01)
    assert serfling_radius(0, 400, 0.01) == math.inf


def test_eliminated_needs_keep_confident_winners():
    n = 200
    strong = torch.ones(n, dtype=torch.bool)
    # eps(200 of 10,000, delta 0.01) = 0.21: 100% beats 75% clearly; 90% is within eps of both
    weak = torch.arange(n) % 4 != 0
    close = torch.arange(n) % 10 != 0
    correct = {0: strong, 1: weak, 2: close}
    assert eliminated(correct, total=10_000, delta=0.01, bound="serfling") == {1}
    assert eliminated(correct, total=10_000, delta=0.01, keep=2, bound="serfling") == set()   # only 0 beats 1 clearly
    assert eliminated({0: strong, 1: strong}, total=10_000, delta=0.01, bound="serfling") == set()
    # paired: 0 beats 2 on all 20 documents where they differ (p = 2^-20 < 0.01); 2 beats 1 on 40 of 50 (p ~ 1e-5)
    assert eliminated(correct, total=10_000, delta=0.01) == {1, 2}
    assert eliminated(correct, total=10_000, delta=0.01, keep=2) == {1}
    assert eliminated({0: strong, 1: strong}, total=10_000, delta=0.01) == set()
    assert per_test_delta(RaceSettings(delta=0.06, slices=2), 4) == pytest.approx(0.06 / 6)          # 1 x 3 x 2
    assert per_test_delta(RaceSettings(delta=0.06, slices=2, keep=2), 4) == pytest.approx(0.06 / 12)


def test_item_slices_are_a_seeded_partition():
    slices = item_slices(50, RaceSettings(slices=8, seed=3))
    assert slices == item_slices(50, RaceSettings(slices=8, seed=3))
    counts = [slices.count(s) for s in range(8)]
    assert sum(counts) == 50 and max(counts) - min(counts) <= 1
    assert slices != item_slices(50, RaceSettings(slices=8, seed=4))


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_race_stops_dropped_candidates_and_scores_the_rest_exactly(tiny_checkpoints, monkeypatch, engine):
    model = load(tiny_checkpoints("llama"))
    items = mc_items(24)
    exact = Scorer(model, CharTokenizer(), items, batch_size=4, engine=engine)
    raced = Scorer(model, CharTokenizer(), items, batch_size=4, engine=engine, race=RaceSettings(slices=4))
    assert sorted(b for sl in raced.engine.slice_batches for b in sl) == list(range(len(raced.engine.batches)))

    looks = []

    def drop_block_0_and_2(correct, **_):   # stands in for the bound: deterministic drops
        looks.append(len(next(iter(correct.values()))))
        return {b for b in correct if b in (0, 2)} if len(looks) == 1 else set()

    monkeypatch.setattr(scorer_module, "eliminated", drop_block_0_and_2)
    got, want = raced.children(frozenset(), range(6)), exact.children(frozenset(), range(6))
    first_slice = sum(1 for s in raced.item_slice if s == 0)
    assert looks[0] == first_slice and len(looks) == 3           # looks after slices 1-3, none after the last
    for b in (0, 2):
        assert not got[b].exact and got[b].sequences == sum(items[i].num_choices for i, s in
                                                            enumerate(raced.item_slice) if s == 0)
    for b in (1, 3, 4, 5):
        assert got[b].exact and got[b].sequences == len(raced.engine.requests)
        torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-4, rtol=1e-6)
        assert got[b].accuracy == want[b].accuracy
    assert raced.engine.stats.block_tokens < exact.engine.stats.block_tokens + exact.engine.stats.block_tokens // 4


def _rigged(model, items):
    """The items with gold set to the model's own choice on 3 of 4 (so it is above chance)."""
    import dataclasses

    from layershear.scoring.accuracy import item_scores

    scorer = Scorer(model, CharTokenizer(), items)
    picks = [int(s.argmax()) for s in item_scores(items, scorer.engine.run(), measures=scorer.measures)]
    return [dataclasses.replace(it, gold=p if i % 4 else (p + 1) % 3) for i, (it, p) in enumerate(zip(items, picks))]


def test_greedy_with_racing_skips_dropped_candidates(tiny_checkpoints, monkeypatch):
    model = load(tiny_checkpoints("llama"))
    items = _rigged(model, mc_items(24))
    exact = GreedyPruner(Scorer(model, CharTokenizer(), items, batch_size=4)).prune(2)
    best = exact.steps[0].chosen.block_idx
    monkeypatch.setattr(scorer_module, "eliminated",
                        lambda correct, **kw: {b for b in correct if b != best and len(correct) == 6})
    raced = GreedyPruner(Scorer(model, CharTokenizer(), items, batch_size=4, race=RaceSettings(slices=4))).prune(2)
    assert raced.steps[0].chosen.block_idx == best and raced.steps[0].chosen.exact
    assert sum(not c.exact for c in raced.steps[0].candidates) == 5
    assert raced.removed[0] == exact.removed[0]


def test_mcnemar_pvalue_is_valid_on_every_small_population():
    """Under H0 (a not better than b on D: N10 <= N01) P(p-value <= alpha) <= alpha, over every sample of
    n of the N documents, for every population composition (exact enumeration)."""
    import itertools

    from layershear.scoring.racing import mcnemar_pvalue

    total, n = 10, 6
    for n10 in range(total + 1):
        for n01 in range(n10, total - n10 + 1):
            docs = [1] * n10 + [-1] * n01 + [0] * (total - n10 - n01)
            pvalues = []
            for sample in itertools.combinations(range(total), n):
                wins = sum(docs[i] == 1 for i in sample)
                losses = sum(docs[i] == -1 for i in sample)
                pvalues.append(mcnemar_pvalue(wins, losses, n, total))
            for alpha in (0.01, 0.05, 0.1, 0.2, 0.3):
                assert sum(p <= alpha for p in pvalues) / len(pvalues) <= alpha + 1e-12, (n10, n01, alpha)
    assert mcnemar_pvalue(8, 2, 20, 20) == 0.0            # all of D seen: 8 > 2 is certain
    assert mcnemar_pvalue(0, 0, 5, 100) == 1.0
    with pytest.raises(ValueError, match="counts do not fit"):
        mcnemar_pvalue(4, 3, 5, 100)


@pytest.mark.parametrize("bound", ["mcnemar", "serfling"])
def test_racing_never_drops_the_best_candidate_more_often_than_delta(bound):
    """Many seeds: K candidates whose correctness differs from a shared base on a few documents (as
    neighbouring pruned models do); a race over S looks eliminates the exactly best candidate in at most
    a delta fraction of the races (the bound's promise), and the paired bound stops more candidates."""
    total, k, looks, delta, errors, dropped = 240, 6, 6, 0.2, 0, 0
    settings = RaceSettings(delta=delta, slices=looks, bound=bound)
    for seed in range(150):
        g = torch.Generator().manual_seed(seed)
        base = torch.rand(total, generator=g) < 0.55
        correct = {}
        for b in range(k):
            flip = torch.rand(total, generator=g) < 0.03 + 0.04 * b          # worse candidates differ more
            hurt = torch.rand(total, generator=g) < 0.5 + 0.08 * b
            correct[b] = torch.where(flip, ~hurt, base)
        acc = {b: c.double().mean().item() for b, c in correct.items()}
        best = max(acc.values())
        if sum(a == best for a in acc.values()) > 1:
            continue
        top = max(acc, key=acc.get)
        order = torch.randperm(total, generator=g)
        alive = set(correct)
        for look in range(1, looks):
            seen = order[: look * total // looks]
            out = eliminated({b: correct[b][seen] for b in alive}, total=total,
                             delta=per_test_delta(settings, k), bound=bound)
            alive -= out
        errors += top not in alive
        dropped += k - len(alive)
    assert errors <= delta * 150
    if bound == "mcnemar":
        assert dropped > 150        # it does stop candidates early (more than one per race on average)
