"""The paper's accuracy-based relevance of one block (arXiv 2605.14075, AccBasedRelevance).

    AccBasedRelevance(f, l, D) = 1 - max(Acc(f_-l, D) - r(D), 0) / max(Acc(f, D) - r(D), 0)

Undefined when f is not above random on D; :func:`relevance_undefined` is the one error every
caller raises then. A :class:`BlockScore` is the relevance of one block relative to the model it is
removed from, computed by :func:`block_score` from the two models' :class:`ModelAccuracy`.
"""

from __future__ import annotations

from dataclasses import dataclass

from layershear.errors import ScoringError
from layershear.scoring.accuracy import ModelAccuracy, above_random


def relevance_undefined(accuracy: float, random: float, removed: frozenset[int] = frozenset()) -> ScoringError:
    """The error for a model (without ``removed``) whose accuracy is not above r(D): relevance is undefined."""
    model = f"with blocks {sorted(removed)} removed the model's" if removed else "the model's"
    return ScoringError(f"relevance is undefined: {model} calibration accuracy {accuracy:.4f} is not above random "
                        f"({random:.4f}); remove fewer blocks or use calibration tasks on which the model is above chance")


def check_defined(model: ModelAccuracy) -> ModelAccuracy:
    """``model`` itself if it is above random; raises :func:`relevance_undefined` otherwise."""
    if not model.above_random:
        raise relevance_undefined(model.accuracy, model.random, model.removed)
    return model


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
        raise relevance_undefined(acc_full, r)
    return 1.0 - max(acc_pruned - r, 0.0) / (acc_full - r)


def relevance_or_none(acc_pruned: float, acc_full: float, r: float) -> float | None:
    """:func:`relevance`, or ``None`` where it is undefined (per-task breakdowns)."""
    return relevance(acc_pruned, acc_full, r) if above_random(acc_full, r) else None


@dataclass(frozen=True)
class BlockScore:
    """Relevance of one block relative to the model it is removed from (paper: AccBasedRelevance).

    ``accuracy`` (and its per-task parts) is the accuracy of that model without the block, in [0, 1];
    ``exact`` and ``sequences`` are those of its :class:`ModelAccuracy` (racing); ``documents``: the
    calibration items it was scored on (all of D unless racing dropped it).
    """

    block_idx: int
    relevance: float
    accuracy: float
    relevance_by_task: dict[str, float | None]
    accuracy_by_task: dict[str, float]
    gold_prob: float
    exact: bool = True
    sequences: int = 0
    documents: int = 0


def block_score(parent: ModelAccuracy, child: ModelAccuracy, block_idx: int) -> BlockScore:
    """Relevance of ``block_idx`` = removing it from ``parent`` gives ``child``.

    Raises:
        ScoringError: the parent model is not above random on the calibration set.
    """
    return BlockScore(
        block_idx=block_idx,
        relevance=relevance(child.accuracy, check_defined(parent).accuracy, parent.random),
        accuracy=child.accuracy,
        relevance_by_task={t: relevance_or_none(child.accuracy_by_task[t], a, parent.random_by_task[t])
                           if t in child.accuracy_by_task else None for t, a in parent.accuracy_by_task.items()},
        accuracy_by_task=dict(child.accuracy_by_task),
        gold_prob=child.gold_prob,
        exact=child.exact,
        sequences=child.sequences,
        documents=len(child.correct),
    )
