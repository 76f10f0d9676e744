"""Multiple-choice accuracy (lm-eval ``acc`` / ``acc_norm``) and the paper's accuracy-based relevance."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from layershear.data.benchmarks import MCItem
from layershear.errors import ScoringError

METRICS = ("acc", "acc_norm")

#: Accuracies within this of r(D) count as "at chance": r(D) is a float mean of 1/num_choices, so an
#: exactly-at-chance model (2 of 10 five-choice items) can otherwise compare as 1e-17 above it.
CHANCE_TOLERANCE = 1e-9


def above_random(acc: float, r: float) -> bool:
    """Whether ``acc`` exceeds r(D) by more than :data:`CHANCE_TOLERANCE` (relevance is defined)."""
    return acc - r > CHANCE_TOLERANCE


def item_scores(items: Sequence[MCItem], lls: torch.Tensor, *, metrics: Sequence[str]) -> list[torch.Tensor]:
    """Per-item choice scores: ``ll_i`` for ``acc``, ``ll_i / len(choice_i)`` for ``acc_norm``.

    Args:
        items: the documents, in the order their requests were encoded.
        lls: float64 tensor ``[sum(num_choices)]`` of log-likelihoods, item-major then choice order.
        metrics: one metric per item, ``acc`` or ``acc_norm`` (lm-eval ``process_results``: the
            divisor is the character length of the choice string, without the target delimiter).

    Returns:
        One float64 tensor ``[num_choices]`` per item.

    Raises:
        ScoringError: unknown metric or a length mismatch.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ScoringError(f"Unknown metric {unknown[0]!r}; choose one of: {', '.join(METRICS)}")
    total = sum(item.num_choices for item in items)
    if lls.numel() != total or len(metrics) != len(items):
        raise ScoringError(f"Got {lls.numel()} log-likelihoods and {len(metrics)} metrics for "
                           f"{total} choices of {len(items)} items")
    out, k = [], 0
    for item, metric in zip(items, metrics):
        scores = lls[k:k + item.num_choices]
        if metric == "acc_norm":
            scores = scores / torch.tensor(item.choice_lengths, dtype=scores.dtype).clamp(min=1)
        out.append(scores)
        k += item.num_choices
    return out


def correct(items: Sequence[MCItem], scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-item correctness ``argmax(scores) == gold`` (ties go to the first index, as ``np.argmax``).

    Returns:
        bool tensor of shape ``[len(items)]``.
    """
    return torch.tensor([int(torch.argmax(s)) == item.gold for item, s in zip(items, scores)], dtype=torch.bool)


def relevance(acc_pruned: float, acc_full: float, r: float) -> float:
    """AccBasedRelevance(f, l, D) = 1 - max(Acc(f_-l) - r, 0) / max(Acc(f) - r, 0).

    Source: "Rethinking Layer Relevance in Large Language Models Beyond Cosine Similarity"
    (arXiv 2605.14075), the accuracy-based relevance. Range (-inf, 1]: 1 means removing the block
    drops the model to chance; 0 means no change; negative means removing it helps.

    Args:
        acc_pruned: Acc(f_-l, D), accuracy in [0, 1] with block l removed.
        acc_full: Acc(f, D), accuracy of the model the block is removed from.
        r: r(D), random-guess accuracy.

    Raises:
        ScoringError: ``acc_full <= r``; the score is undefined (division by zero).
    """
    if not above_random(acc_full, r):
        raise ScoringError(
            f"relevance is undefined: the model's accuracy {acc_full:.4f} is not above random ({r:.4f}) "
            "on this calibration set; use tasks on which the model is above chance")
    return 1.0 - max(acc_pruned - r, 0.0) / (acc_full - r)


def relevance_or_none(acc_pruned: float, acc_full: float, r: float) -> float | None:
    """:func:`relevance`, or ``None`` where it is undefined (per-task breakdowns)."""
    return relevance(acc_pruned, acc_full, r) if above_random(acc_full, r) else None


def stderr(values: Sequence[float] | torch.Tensor) -> float:
    """Standard error of the mean (sample std / sqrt(n)), as lm-eval's ``mean_stderr``."""
    x = torch.as_tensor(values, dtype=torch.float64)
    n = x.numel()
    return float(x.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
