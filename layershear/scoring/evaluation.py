"""Held-out evaluation: lm-eval style acc / acc_norm (with standard errors) per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from layershear.data.benchmarks import MCItem, get_task, random_accuracy
from layershear.errors import ScoringError
from layershear.scoring.accuracy import correct, item_scores, stderr
from layershear.scoring.scorer import ProgressFn, Scorer


@dataclass(frozen=True)
class TaskResult:
    """One task's scores; ``values``/``stderrs`` map metric name (acc, acc_norm) to a fraction in [0, 1]."""

    task: str
    num_docs: int
    values: dict[str, float]
    stderrs: dict[str, float]
    random: float


def evaluate_items(model, tokenizer, items: Sequence[MCItem], *, batch_size: int = 16, max_length: int | None = None,
                   add_bos: bool = False, on_progress: ProgressFn | None = None) -> TaskResult:
    """Score one task's items with every metric its lm-eval YAML lists (acc, and acc_norm where listed).

    ``on_progress(task, batches_done, batches_total)`` is called after every forward pass.

    Raises:
        ScoringError: empty ``items``.
    """
    if not items:
        raise ScoringError("evaluate_items() needs at least one document")
    task = items[0].task
    lls = Scorer(model, tokenizer, items, batch_size=batch_size, max_length=max_length, add_bos=add_bos,
                 on_progress=on_progress).loglikelihoods(label=task)
    values, errs = {}, {}
    for metric in get_task(task).metrics:
        ok = correct(items, item_scores(items, lls, metrics=[metric] * len(items))).double()
        values[metric], errs[metric] = float(ok.mean()), stderr(ok)
    return TaskResult(task, len(items), values, errs, random_accuracy(items))


def evaluate_suite(model, tokenizer, tasks: Mapping[str, Sequence[MCItem]], **kwargs) -> list[TaskResult]:
    """:func:`evaluate_items` for every task with at least one doc, in the given order."""
    return [evaluate_items(model, tokenizer, items, **kwargs) for items in tasks.values() if items]
