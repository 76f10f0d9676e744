"""Racing: stop scoring a candidate once a confidence bound shows it cannot be the one removed.

Within one greedy step the block removed is the candidate whose model has the highest calibration
accuracy (the least relevant one, AccBasedRelevance being decreasing in Acc(f_-l, D)). Racing
scores all candidates on the same growing random slices of the calibration set; after each slice
it compares every pair of candidates on the items seen so far. For candidates a and b the per-item
difference d_i = correct_a(i) - correct_b(i) lies in [-1, 1], and the items seen are a simple random
sample without replacement of the N items of D (slices are drawn by a seeded permutation of items,
and each slice is packed on its own). The Hoeffding-Serfling inequality (Serfling 1974; Bardenet &
Maillard 2015, Bernoulli 21(3), Thm. 2.4) bounds the full-set mean:

    P( mean_n(d) - mean_N(d) >= eps ) <= exp(-2 n eps^2 / ((1 - (n - 1) / N) R^2)),   R = 2

so with probability >= 1 - delta' Acc(f_-a, D) > Acc(f_-b, D) once mean_n(d) > eps(n, N, delta').
A candidate is eliminated from the race when ``keep`` others (1 for greedy, the beam width otherwise)
are confidently better. Racing errs only if a candidate t of the true top ``keep`` is eliminated; then
at least one of the candidates that beat t is not truly better than t (at most keep - 1 are), so
one of the keep (K - 1) pairs (a, t) deviated at one of the S looks: delta' = delta / (keep (K - 1) S)
per comparison bounds the error of a whole step by delta. Candidates left at the end are scored on
all of D, exactly as without racing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

BOUND = "Hoeffding-Serfling (sampling without replacement), union bound over keep x (K-1) pairs and the looks"


@dataclass(frozen=True)
class RaceSettings:
    """``delta``: error probability per greedy step; ``slices``: looks (the calibration set is split
    into this many random slices of items); ``seed``: of the item permutation; ``keep``: candidates
    that must survive (the beam width)."""

    delta: float = 0.05
    slices: int = 8
    seed: int = 0
    keep: int = 1


def serfling_radius(n: int, total: int, delta: float, value_range: float = 2.0) -> float:
    """eps such that P(sample mean - population mean >= eps) <= delta, for n of ``total`` values
    drawn without replacement, values in an interval of width ``value_range``."""
    if n <= 0:
        return math.inf
    return value_range * math.sqrt((1.0 - (n - 1) / total) * math.log(1.0 / delta) / (2.0 * n))


def eliminated(correct: Mapping[int, torch.Tensor], *, total: int, delta: float, keep: int = 1) -> set[int]:
    """Candidates that at least ``keep`` others beat with confidence.

    Args:
        correct: candidate -> bool tensor ``[n]``, correctness on the same n items seen so far.
        total: N, items in the calibration set.
        delta: error probability allowed for each single comparison (already divided for the union).
        keep: how many candidates must be confidently better to eliminate one.
    """
    if not correct:
        return set()
    n = len(next(iter(correct.values())))
    eps = serfling_radius(n, total, delta)
    acc = {b: c.double().mean().item() if n else 0.0 for b, c in correct.items()}
    out = set()
    for b in correct:
        better = sum(1 for a in correct if a != b and acc[a] - acc[b] > eps)   # mean of d = difference of accuracies
        if better >= keep:
            out.add(b)
    return out


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
