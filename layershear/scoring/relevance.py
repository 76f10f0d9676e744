"""Calibration accuracy of one model and the relevance of one block (paper: AccBasedRelevance).

An :class:`Evaluation` is Acc(f_-drop, D) with its per-task parts and per-document correctness; a
:class:`BlockScore` is the relevance 1 - max(Acc(f_-l, D) - r(D), 0) / max(Acc(f, D) - r(D), 0)
of block l (arXiv 2605.14075), computed by :func:`block_score` from two evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from layershear.data.benchmarks import MCItem, get_task, random_accuracy
from layershear.scoring.accuracy import above_random, correct, item_scores, relevance, relevance_or_none


def task_metric(task: str, metric: str = "auto") -> str:
    """The accuracy metric scored for ``task``: ``auto`` = acc_norm where lm-eval reports it, else acc."""
    if metric != "auto":
        return metric
    return "acc_norm" if "acc_norm" in get_task(task).metrics else "acc"


@dataclass(frozen=True)
class Evaluation:
    """Calibration accuracy of the model with ``drop`` removed.

    ``accuracy`` is the micro average over all items (each item's own metric, see
    :func:`task_metric`), ``random`` is r(D) over the same items; ``gold_prob`` is the mean
    softmax probability (over the item's choices) of the gold choice, a smooth tie-breaker. A
    candidate dropped by racing (:mod:`layershear.scoring.racing`) has ``exact=False`` and these numbers on
    the items it was scored on only (``correct`` then covers those items).
    """

    drop: frozenset[int]
    accuracy: float
    random: float
    gold_prob: float
    accuracy_by_task: dict[str, float]
    random_by_task: dict[str, float]
    correct: tuple[bool, ...] = field(repr=False)
    loglikelihoods: torch.Tensor | None = field(default=None, repr=False, compare=False)  # float64 [num_requests]
    exact: bool = True        # False: a racing estimate on the first ``sequences`` requests of a random slice order
    sequences: int = 0        # (context, continuation) requests scored for this evaluation

    @property
    def above_random(self) -> bool:
        return above_random(self.accuracy, self.random)


@dataclass(frozen=True)
class BlockScore:
    """Relevance of one block relative to the model it is removed from (paper: AccBasedRelevance)."""

    block_idx: int
    relevance: float
    accuracy: float
    relevance_by_task: dict[str, float | None]
    accuracy_by_task: dict[str, float]
    gold_prob: float
    exact: bool = True
    sequences: int = 0


def block_score(parent: Evaluation, child: Evaluation, block_idx: int) -> BlockScore:
    """Relevance of ``block_idx`` = removing it from ``parent`` gives ``child``.

    Raises:
        ScoringError: the parent model is not above random on the calibration set.
    """
    return BlockScore(
        block_idx=block_idx,
        relevance=relevance(child.accuracy, parent.accuracy, parent.random),
        accuracy=child.accuracy,
        relevance_by_task={t: relevance_or_none(child.accuracy_by_task[t], a, parent.random_by_task[t])
                           if t in child.accuracy_by_task else None for t, a in parent.accuracy_by_task.items()},
        accuracy_by_task=dict(child.accuracy_by_task),
        gold_prob=child.gold_prob,
        exact=child.exact,
        sequences=child.sequences,
    )


def evaluation(drop: frozenset[int], items: Sequence[MCItem], metrics: Sequence[str],
               item_requests: Sequence[Sequence[int]], lls: torch.Tensor,
               index: Sequence[int] | None = None) -> Evaluation:
    """The :class:`Evaluation` of the model without ``drop`` from its per-request log-likelihoods.

    Args:
        drop: the removed blocks.
        items: the calibration set D; ``metrics[i]`` (acc or acc_norm) is item i's metric.
        item_requests: indices into ``lls`` of each item's choices, in choice order.
        lls: float64 ``[num_requests]`` summed continuation log-likelihoods (nats).
        index: only these item indices (a racing estimate, ``exact=False``); None = all of D.
    """
    exact = index is None
    index = list(range(len(items))) if index is None else list(index)
    docs = [items[i] for i in index]
    sub = lls[[k for i in index for k in item_requests[i]]]
    scores = item_scores(docs, sub, metrics=[metrics[i] for i in index])
    ok = correct(docs, scores)
    probs = [torch.softmax(sc, 0)[item.gold] for item, sc in zip(docs, scores)]
    by_task: dict[str, list[int]] = {}
    for k, item in enumerate(docs):
        by_task.setdefault(item.task, []).append(k)
    return Evaluation(
        drop=drop,
        accuracy=float(ok.double().mean()),
        random=random_accuracy(docs),
        gold_prob=float(torch.stack(probs).mean()),
        accuracy_by_task={t: float(ok[idx].double().mean()) for t, idx in sorted(by_task.items())},
        random_by_task={t: random_accuracy([docs[k] for k in idx]) for t, idx in sorted(by_task.items())},
        correct=tuple(bool(x) for x in ok),
        loglikelihoods=lls if exact else None,
        exact=exact,
        sequences=int(sub.numel()),
    )
