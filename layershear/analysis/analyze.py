"""`layershear analyze`: every block metric on one model, how they agree, and what pruning by each costs.

Computes, on the same calibration set D: accuracy-based relevance (the paper's metric) and the
baselines of :mod:`layershear.scoring.baselines` (cosine, angular, perplexity, taylor); on held-out eval
documents: the accuracy drop of removing each block alone, per task. From these it derives the
paper's comparisons (Pearson / Spearman between cosine score and accuracy drop per task and pooled,
the rank confusion matrix with misjudgment rates, task dependence with a Wilcoxon test) and the
pruning curve of every metric (held-out accuracy vs blocks removed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from layershear.analysis.statistics import correlation, misjudgment, rank_confusion, task_dependence
from layershear.data.benchmarks import MCItem
from layershear.engine.config import EngineConfig
from layershear.scoring.baselines import calibration_texts, cosine_scores
from layershear.scoring.scorer import ProgressFn, Scorer
from layershear.search import GreedyPruner
from layershear.search.baseline import BASELINES, ITERATIVE_BY_DEFAULT, METRICS, remove_by_metric

#: on_stage(description): called when a stage starts (progress display)
StageFn = Callable[[str], None]


@dataclass
class Analysis:
    """Every number of one analysis (see :meth:`to_dict` for report.json).

    Block-keyed dicts use original block indices. ``scores[metric]``: higher = more important
    (accuracy: relevance on D). ``drop_by_task[task][b]``: accuracy of the full model minus the
    model without b on that task's eval documents (fractions). ``curves[metric]``: (blocks removed,
    eval accuracy) pairs for that metric's removal order.
    """

    num_blocks: int
    tasks: list[str]
    scores: dict[str, dict[int, float]]
    drop: dict[int, float]
    drop_by_task: dict[str, dict[int, float]]
    cosine_by_task: dict[str, dict[int, float]]
    full_accuracy_by_task: dict[str, float]
    random_by_task: dict[str, float]
    eval_random: float
    orders: dict[str, list[int]]
    curves: dict[str, list[tuple[int, float]]]
    correlations: dict[str, Any] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    misjudgment: dict[str, Any] = field(default_factory=dict)
    task_dependence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def keyed(d: Mapping[int, float]) -> dict[str, float]:
            return {str(b): v for b, v in sorted(d.items())}

        return {
            "num_blocks": self.num_blocks, "tasks": self.tasks,
            "scores": {m: keyed(s) for m, s in self.scores.items()},
            "accuracy_drop": keyed(self.drop),
            "accuracy_drop_by_task": {t: keyed(d) for t, d in self.drop_by_task.items()},
            "cosine_by_task": {t: keyed(d) for t, d in self.cosine_by_task.items()},
            "full_accuracy_by_task": self.full_accuracy_by_task, "random_by_task": self.random_by_task,
            "eval_random": self.eval_random,
            "removal_orders": self.orders,
            "pruning_curves": {m: [[k, a] for k, a in c] for m, c in self.curves.items()},
            "correlations": self.correlations, "rank_confusion": self.confusion, "misjudgment": self.misjudgment,
            "task_dependence": self.task_dependence,
        }


def analyze(model, tokenizer, calib_items: Sequence[MCItem], eval_tasks: Mapping[str, Sequence[MCItem]], *,
            max_remove: int, batch_size: int = 16, max_length: int | None = None, add_bos: bool = False,
            acc_norm: bool | None = None, engine: str | EngineConfig = "fast", on_stage: StageFn | None = None,
            on_progress: ProgressFn | None = None) -> Analysis:
    """Run every metric and comparison (see the module docstring).

    Args:
        calib_items: the calibration set D (accuracy relevance and the baselines' texts).
        eval_tasks: task -> held-out documents (accuracy drops, pruning curves).
        max_remove: blocks removed at the end of each pruning curve.
        acc_norm: score every task by acc_norm / acc (None = lm-eval's choice per task).
        on_stage: called with a description when a stage starts; on_progress: after every forward
            pass of the log-likelihood engine (:data:`layershear.engine.loglikelihood.ProgressFn`).

    Raises:
        ScoringError: the model is not above chance on D (relevance undefined); LayershearError
            from the task-dependence test when fewer than 2 tasks are given.
    """
    stage = on_stage or (lambda _s: None)
    kw = {"batch_size": batch_size, "max_length": max_length, "add_bos": add_bos, "engine": engine,
          "acc_norm": acc_norm, "on_progress": on_progress}
    text_kw = {"batch_size": batch_size, "max_length": max_length or 2048}
    texts = calibration_texts(calib_items)

    stage("accuracy relevance on the calibration set")
    calib = Scorer(model, tokenizer, calib_items, **kw)
    num_blocks = calib.num_blocks
    scores: dict[str, dict[int, float]] = {"accuracy": {s.block_idx: s.relevance for s in calib.score_blocks()}}
    for metric, fn in BASELINES.items():
        stage(f"{metric} scores on the calibration text")
        scores[metric] = fn(model, tokenizer, texts, **text_kw)

    stage("accuracy drop of every block on the eval documents")
    eval_items = [it for items in eval_tasks.values() for it in items]
    held_out = Scorer(model, tokenizer, eval_items, **kw)
    full = held_out.accuracy()
    children = held_out.children(frozenset(), range(num_blocks))
    tasks = list(full.accuracy_by_task)
    drop = {b: _average(full) - _average(ev) for b, ev in children.items()}
    drop_by_task = {t: {b: full.accuracy_by_task[t] - ev.accuracy_by_task[t] for b, ev in children.items()} for t in tasks}
    cosine_by_task = {}
    for task, items in eval_tasks.items():
        stage(f"cosine scores on {task}")
        cosine_by_task[task] = cosine_scores(model, tokenizer, calibration_texts(items), **text_kw)

    orders, curves = {}, {}
    for metric in METRICS:
        stage(f"pruning curve: {metric}")
        if metric == "accuracy":
            orders[metric] = list(GreedyPruner(calib).prune(max_remove).removed)
        else:
            orders[metric] = list(remove_by_metric(metric, model, tokenizer, texts, num_remove=max_remove,
                                                   num_blocks=num_blocks, iterative=metric in ITERATIVE_BY_DEFAULT,
                                                   **text_kw).removed)
        curves[metric] = [(k, _average(held_out.accuracy(orders[metric][:k]))) for k in range(max_remove + 1)]

    out = Analysis(num_blocks, tasks, scores, drop, drop_by_task, cosine_by_task, dict(full.accuracy_by_task),
                   dict(full.random_by_task), full.random, orders, curves)
    _compare(out)
    return out


def _average(acc) -> float:
    """The held-out accuracy of a model: the mean of its per-task accuracies (the paper's "average"),
    so that a text corpus, whose every token is an item, weighs as one task."""
    return sum(acc.accuracy_by_task.values()) / len(acc.accuracy_by_task)


def _compare(a: Analysis) -> None:
    """Fill the correlations, confusion matrix, misjudgment rates and task dependence of ``a``."""
    per_task = {t: correlation(a.cosine_by_task[t], a.drop_by_task[t]).to_dict() for t in a.tasks}
    pairs_cos, pairs_drop = {}, {}
    for t in a.tasks:
        for b in a.drop_by_task[t]:
            key = len(pairs_cos)
            pairs_cos[key], pairs_drop[key] = a.cosine_by_task[t][b], a.drop_by_task[t][b]
    a.correlations = {
        "cosine_vs_drop_by_task": per_task,
        "cosine_vs_drop_pooled": correlation(pairs_cos, pairs_drop).to_dict(),   # over (block, task) pairs
        "metric_vs_drop": {m: correlation(s, a.drop).to_dict() for m, s in a.scores.items()},
    }
    a.confusion = rank_confusion(a.scores["accuracy"], a.scores["cosine"]).tolist()
    a.misjudgment = misjudgment(a.scores["accuracy"], a.scores["cosine"]).to_dict()
    a.task_dependence = task_dependence(a.drop_by_task, a.cosine_by_task).to_dict()
