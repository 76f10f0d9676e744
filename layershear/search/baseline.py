"""Block removal by a baseline metric (cosine, angular, perplexity, taylor): one-shot or iterative.

Accuracy-based relevance has its own search (:mod:`layershear.search`: greedy / beam over Scorer
accuracies). The baselines rank blocks by a score computed on calibration text
(:mod:`layershear.scoring.baselines`, higher = more important): **one-shot** removes the ``num_remove`` least
important blocks of the full model at once (ShortGPT, Gromov et al., Shortened LLaMA Taylor+);
**iterative** removes the least important block, rescores the smaller model, and repeats (SLEB's
procedure, and the paper's greedy procedure applied to another score).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from layershear.errors import LayershearError
from layershear.scoring import baselines
from layershear.scoring.metric_names import ITERATIVE_BY_DEFAULT, METRICS
from layershear.search.count import check_count

__all__ = ["BASELINES", "ITERATIVE_BY_DEFAULT", "METRICS", "MetricRemoval", "least_important_order",
           "remove_by_metric"]

#: metric name -> scoring function(model, tokenizer, texts, removed=..., batch_size=..., max_length=...)
BASELINES: dict[str, Callable[..., dict[int, float]]] = {
    "cosine": baselines.cosine_scores,
    "angular": baselines.angular_scores,
    "perplexity": baselines.perplexity_scores,
    "taylor": baselines.taylor_scores,
}

#: on_step(step, num_remove, removed_block, scores_of_that_step)
StepFn = Callable[[int, int, int, dict[int, float]], None]


def least_important_order(scores: Mapping[int, float]) -> list[int]:
    """Blocks from least to most important: ascending score, ties broken by block index.

    Raises:
        LayershearError: a score is NaN or infinite (it has no place in an order).
    """
    bad = sorted(b for b, s in scores.items() if not math.isfinite(s))
    if bad:
        raise LayershearError(f"Scores of blocks {bad} are not finite; remove those blocks from the scores before ranking")
    return sorted(scores, key=lambda b: (scores[b], b))


@dataclass(frozen=True)
class MetricRemoval:
    """Blocks removed by a baseline metric, in removal order (original indices).

    ``scores[k]`` holds the score of every block present before removal k (iterative), or the one
    scoring of the full model (one-shot, a single entry).
    """

    metric: str
    iterative: bool
    num_blocks: int
    removed: tuple[int, ...]
    scores: tuple[dict[int, float], ...]

    def to_dict(self) -> dict:
        return {"metric": self.metric, "strategy": "iterative" if self.iterative else "one-shot",
                "num_blocks": self.num_blocks, "removed": list(self.removed),
                "scores": [{str(b): v for b, v in sorted(s.items())} for s in self.scores]}


def remove_by_metric(metric: str, model, tokenizer, texts: Sequence[str], *, num_remove: int, num_blocks: int,
                     iterative: bool, batch_size: int = 8, max_length: int = 2048,
                     on_step: StepFn | None = None) -> MetricRemoval:
    """Remove ``num_remove`` blocks by a baseline metric.

    Args:
        metric: one of :data:`BASELINES` (``accuracy`` goes through :class:`layershear.search.GreedyPruner`).
        texts: calibration texts (:func:`layershear.scoring.baselines.calibration_texts`).
        num_remove: blocks to remove, 1 <= num_remove < num_blocks.
        iterative: rescore after every removal; else rank once on the full model.

    Raises:
        LayershearError: unknown metric or bad ``num_remove``; ScoringError from the metric.
    """
    if metric not in BASELINES:
        raise LayershearError(f"--metric {metric!r} has no baseline scorer; choose one of: {', '.join(BASELINES)}")
    check_count(num_remove, num_blocks)
    score = BASELINES[metric]
    kw = {"batch_size": batch_size, "max_length": max_length}
    removed: list[int] = []
    history: list[dict[int, float]] = []
    if not iterative:
        scores = score(model, tokenizer, texts, removed=(), **kw)
        history.append(scores)
        for step, block in enumerate(least_important_order(scores)[:num_remove], 1):
            removed.append(block)
            if on_step is not None:
                on_step(step, num_remove, block, scores)
    else:
        for step in range(1, num_remove + 1):
            scores = score(model, tokenizer, texts, removed=tuple(removed), **kw)
            history.append(scores)
            block = least_important_order(scores)[0]
            removed.append(block)
            if on_step is not None:
                on_step(step, num_remove, block, scores)
    return MetricRemoval(metric, iterative, num_blocks, tuple(removed), tuple(history))
