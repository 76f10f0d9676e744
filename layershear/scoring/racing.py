"""Racing: stop scoring a candidate once a confidence bound shows it cannot be the one kept.

Within one greedy step the block removed is the candidate whose model has the highest calibration
accuracy (the least relevant one, AccBasedRelevance being decreasing in Acc(f_-l, D)). Racing
scores all candidates on the same growing random slices of the calibration set; after each slice
it compares every pair of candidates on the items seen so far. The items seen are a simple random
sample without replacement of the N items of D (slices are drawn by a seeded permutation of items,
and each slice is packed on its own). Two bounds decide whether Acc(f_-a, D) > Acc(f_-b, D) with
probability >= 1 - delta' (``RaceSettings.bound``):

``mcnemar`` (paired, the default): candidates are scored on the same documents, and most documents
keep their correctness from one candidate to the next; only the *discordant* ones (a right and b
wrong: n10, a wrong and b right: n01) say which is better. Given that m = n10 + n01 of the n items
seen are discordant, those m are a uniform random draw without replacement from the M discordant
items of D. If a were not better on D (N10 <= N01, so at most floor(M/2) of them favour a), n10 would
be hypergeometric with at most floor(M/2) successes; the exact one-sided p-value, maximised over
the unknown M (m <= M <= N - (n - m)), is

    p = max_M P(Hypergeom(M, floor(M/2), m) >= n10)

and a is confidently better when p <= delta'. This is McNemar's exact test (its binomial
p-value is the M -> infinity limit) made valid for a finite calibration set.

``serfling`` (unpaired, layershear's first racing): d_i = correct_a(i) - correct_b(i) in [-1, 1];
the Hoeffding-Serfling inequality (Serfling 1974; Bardenet & Maillard 2015, Bernoulli 21(3), Thm.
2.4) bounds the full-set mean:

    P( mean_n(d) - mean_N(d) >= eps ) <= exp(-2 n eps^2 / ((1 - (n - 1) / N) R^2)),   R = 2

It ignores that most d_i are 0, so it needs a difference of accuracies of about 2 sqrt(ln(1/delta')
/ 2n) before it decides.

A candidate is eliminated from the race when ``keep`` others (1 for greedy, the beam width
otherwise) are confidently better. Racing errs only if a candidate t of the true top ``keep`` is
eliminated; then at least one of the candidates that beat t is not truly better than t (at most
keep - 1 are), so one of the keep (K - 1) pairs (a, t) deviated at one of the S looks: delta' =
delta / (keep (K - 1) S) per comparison bounds the error of a whole step by delta. Candidates left
at the end are scored on all of D, exactly as without racing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

#: bound name -> what it is, for plans and ``layershear.json``
BOUNDS = {
    "mcnemar": "paired exact McNemar-type (hypergeometric, finite calibration set), union bound over keep x (K-1) "
               "pairs and the looks",
    "serfling": "Hoeffding-Serfling (sampling without replacement), union bound over keep x (K-1) pairs and the looks",
}


@dataclass(frozen=True)
class RaceSettings:
    """``delta``: error probability per greedy step; ``slices``: looks (the calibration set is split
    into this many random slices of items); ``seed``: of the item permutation; ``keep``: candidates
    that must survive (the beam width); ``bound``: one of :data:`BOUNDS`."""

    delta: float = 0.05
    slices: int = 8
    seed: int = 0
    keep: int = 1
    bound: str = "mcnemar"

    def __post_init__(self) -> None:
        if self.bound not in BOUNDS:
            from layershear.errors import LayershearError

            raise LayershearError(f"Unknown racing bound {self.bound!r}; choose one of: {', '.join(BOUNDS)}")

    @property
    def description(self) -> str:
        return BOUNDS[self.bound]


def serfling_radius(n: int, total: int, delta: float, value_range: float = 2.0) -> float:
    """eps such that P(sample mean - population mean >= eps) <= delta, for n of ``total`` values
    drawn without replacement, values in an interval of width ``value_range``."""
    if n <= 0:
        return math.inf
    return value_range * math.sqrt((1.0 - (n - 1) / total) * math.log(1.0 / delta) / (2.0 * n))


def mcnemar_pvalue(wins: int, losses: int, n: int, total: int) -> float:
    """One-sided p-value that candidate a is not better than b on all ``total`` items of D, having
    seen ``n`` of them (a random draw without replacement): ``wins`` items a got right and b wrong,
    ``losses`` the reverse (see the module docstring; exact, maximised over the unknown number of
    discordant items in D). Returns 1.0 without the maximum when even McNemar's binomial p-value
    is above 0.5 (never significant at a level racing uses).

    Raises:
        ValueError: counts that do not fit (wins + losses > n, or n > total).
    """
    m = wins + losses
    if wins < 0 or losses < 0 or m > n or n > total:
        raise ValueError(f"counts do not fit: {wins} + {losses} discordant of {n} seen of {total}")
    if wins == 0:
        return 1.0
    from scipy.stats import binom, hypergeom

    if binom.sf(wins - 1, m, 0.5) > 0.5:      # far from significant: skip the exact maximum
        return 1.0
    population = np.arange(m, total - (n - m) + 1)
    return float(np.max(hypergeom.sf(wins - 1, population, population // 2, m)))


def _serfling_better(correct: Mapping[int, torch.Tensor], total: int, delta: float) -> dict[int, set[int]]:
    n = len(next(iter(correct.values())))
    eps = serfling_radius(n, total, delta)
    acc = {b: c.double().mean().item() if n else 0.0 for b, c in correct.items()}
    return {b: {a for a in correct if a != b and acc[a] - acc[b] > eps} for b in correct}  # mean of d = acc difference


def _mcnemar_better(correct: Mapping[int, torch.Tensor], total: int, delta: float) -> dict[int, set[int]]:
    from scipy.stats import binom

    names = list(correct)
    n = len(correct[names[0]])
    stacked = torch.stack([correct[b] for b in names]).long()
    wins = (stacked.unsqueeze(1) * (1 - stacked).unsqueeze(0)).sum(-1)      # wins[i, j]: i right, j wrong
    out: dict[int, set[int]] = {b: set() for b in names}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            w, l_ = int(wins[i, j]), int(wins[j, i])
            # the binomial p-value is never above the exact one by much; only near-decisions get the exact maximum
            if i != j and w > l_ and binom.sf(w - 1, w + l_, 0.5) <= 4 * delta and \
                    mcnemar_pvalue(w, l_, n, total) <= delta:
                out[b].add(a)
    return out


def better_than(correct: Mapping[int, torch.Tensor], *, total: int, delta: float,
                bound: str = "mcnemar") -> dict[int, set[int]]:
    """For each candidate b, the candidates a with Acc(a, D) > Acc(b, D) at confidence 1 - ``delta``.

    Args:
        correct: candidate -> bool tensor ``[n]``, correctness on the same n items seen so far.
        total: N, items in the calibration set.
        delta: error probability allowed for each single comparison (already divided for the union).
        bound: ``mcnemar`` (paired) or ``serfling`` (:data:`BOUNDS`).
    """
    if not correct:
        return {}
    return (_mcnemar_better if bound == "mcnemar" else _serfling_better)(correct, total, delta)


def eliminated(correct: Mapping[int, torch.Tensor], *, total: int, delta: float, keep: int = 1,
               bound: str = "mcnemar") -> set[int]:
    """Candidates that at least ``keep`` others beat with confidence (:func:`better_than`).

    Args:
        correct: candidate -> bool tensor ``[n]``, correctness on the same n items seen so far.
        total: N, items in the calibration set.
        delta: error probability allowed for each single comparison (already divided for the union).
        keep: how many candidates must be confidently better to eliminate one.
        bound: ``mcnemar`` or ``serfling``.
    """
    return {b for b, winners in better_than(correct, total=total, delta=delta, bound=bound).items()
            if len(winners) >= keep}


def item_slices(num_items: int, settings: RaceSettings) -> list[int]:
    """Slice index (0..slices-1) of every item: a seeded random permutation cut into equal parts."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(settings.seed)).tolist()
    slices = min(settings.slices, num_items)
    out = [0] * num_items
    for rank, item in enumerate(order):
        out[item] = rank * slices // num_items
    return out


def per_test_delta(settings: RaceSettings, num_candidates: int) -> float:
    """delta' = delta / (keep (K - 1) S) (see the module docstring)."""
    return settings.delta / max(1, settings.keep * (num_candidates - 1) * settings.slices)
