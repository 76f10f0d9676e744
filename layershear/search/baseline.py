"""Block removal by a baseline metric (cosine, angular, perplexity, taylor): one-shot or iterative.

Accuracy-based relevance has its own search (:mod:`layershear.search`: greedy / beam over Scorer
evaluations). The baselines rank blocks by a score computed on calibration text
(:mod:`layershear.scoring.baselines`, higher = more important): **one-shot** removes the ``num_drop`` least
important blocks of the full model at once (ShortGPT, Gromov et al., Shortened LLaMA Taylor+);
**iterative** removes the least important block, rescores the smaller model, and repeats (SLEB's
procedure, and the paper's greedy procedure applied to another score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from layershear.analysis.statistics import least_important_order as least_important
from layershear.errors import LayershearError
from layershear.scoring import baselines
from layershear.scoring.metric_names import ITERATIVE_BY_DEFAULT, METRICS

__all__ = ["BASELINES", "ITERATIVE_BY_DEFAULT", "METRICS", "MetricRemoval", "remove_by_metric"]

#: metric name -> scoring function(model, tokenizer, texts, drop=..., batch_size=..., max_length=...)
BASELINES: dict[str, Callable[..., dict[int, float]]] = {
    "cosine": baselines.cosine_scores,
    "angular": baselines.angular_scores,
    "perplexity": baselines.perplexity_scores,
    "taylor": baselines.taylor_scores,
}

#: on_step(step, num_drop, removed_block, scores_of_that_step)
StepFn = Callable[[int, int, int, dict[int, float]], None]


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

    @property
    def drop(self) -> frozenset[int]:
        return frozenset(self.removed)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "strategy": "iterative" if self.iterative else "one-shot",
                "num_blocks": self.num_blocks, "removed": list(self.removed),
                "scores": [{str(b): v for b, v in sorted(s.items())} for s in self.scores]}


def remove_by_metric(metric: str, model, tokenizer, texts: Sequence[str], *, num_drop: int, num_blocks: int,
                     iterative: bool, batch_size: int = 8, max_length: int = 2048,
                     on_step: StepFn | None = None) -> MetricRemoval:
    """Remove ``num_drop`` blocks by a baseline metric.

    Args:
        metric: one of :data:`BASELINES` (``accuracy`` goes through :class:`layershear.search.GreedyPruner`).
        texts: calibration texts (:func:`layershear.scoring.baselines.calibration_texts`).
        num_drop: blocks to remove, 1 <= num_drop < num_blocks.
        iterative: rescore after every removal; else rank once on the full model.

    Raises:
        LayershearError: unknown metric or bad ``num_drop``; ScoringError from the metric.
    """
    if metric not in BASELINES:
        raise LayershearError(f"--metric {metric!r} has no baseline scorer; choose one of: {', '.join(BASELINES)}")
    if not 1 <= num_drop < num_blocks:
        raise LayershearError(f"Cannot remove {num_drop} of {num_blocks} blocks; choose between 1 and {num_blocks - 1}")
    score = BASELINES[metric]
    kw = {"batch_size": batch_size, "max_length": max_length}
    removed: list[int] = []
    history: list[dict[int, float]] = []
    if not iterative:
        scores = score(model, tokenizer, texts, drop=(), **kw)
        history.append(scores)
        for step, block in enumerate(least_important(scores)[:num_drop], 1):
            removed.append(block)
            if on_step is not None:
                on_step(step, num_drop, block, scores)
    else:
        for step in range(1, num_drop + 1):
            scores = score(model, tokenizer, texts, drop=tuple(removed), **kw)
            history.append(scores)
            block = least_important(scores)[0]
            removed.append(block)
            if on_step is not None:
                on_step(step, num_drop, block, scores)
    return MetricRemoval(metric, iterative, num_blocks, tuple(removed), tuple(history))
