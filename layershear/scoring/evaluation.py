"""Held-out evaluation: lm-eval style acc / acc_norm (with standard errors) per task.

Each task's documents are scored in one pass of the log-likelihood engine
(:func:`layershear.engine.loglikelihood.loglikelihood`, lm-eval's ``LM.loglikelihood`` seam), then
reduced as lm-eval's ``multiple_choice`` tasks do: every measure the task's lm-eval YAML lists
(acc, and acc_norm where listed), with lm-eval's standard error of the mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from layershear.data.benchmarks import MCItem, get_task, random_accuracy
from layershear.engine.config import EngineConfig
from layershear.engine.loglikelihood import ProgressFn, loglikelihood
from layershear.engine.requests import requests_of
from layershear.errors import ScoringError
from layershear.scoring.accuracy import correct, item_scores, stderr


@dataclass(frozen=True)
class TaskResult:
    """One task's scores; ``values``/``stderrs`` map measure name (acc, acc_norm) to a fraction in [0, 1]."""

    task: str
    num_docs: int
    values: dict[str, float]
    stderrs: dict[str, float]
    random: float


def evaluate_items(model, tokenizer, items: Sequence[MCItem], *, removed: Iterable[int] = (), batch_size: int = 16,
                   max_length: int | None = None, add_bos: bool = False, engine: str | EngineConfig = "fast",
                   on_progress: ProgressFn | None = None) -> TaskResult:
    """Score one task's items (the model without ``removed``) with every measure its lm-eval YAML lists.

    ``on_progress(task, batches_done, batches_total)`` is called after every forward pass.

    Raises:
        ScoringError: empty ``items``.
    """
    if not items:
        raise ScoringError("evaluate_items() needs at least one document")
    task = items[0].task
    lls = loglikelihood(model, tokenizer, requests_of(items), removed=removed, batch_size=batch_size,
                        max_length=max_length, add_bos=add_bos, engine=engine, on_progress=on_progress, label=task)
    values, errs = {}, {}
    for measure in get_task(task).measures:
        ok = correct(items, item_scores(items, lls, measures=[measure] * len(items))).double()
        values[measure], errs[measure] = float(ok.mean()), stderr(ok)
    return TaskResult(task, len(items), values, errs, random_accuracy(items))


def evaluate_suite(model, tokenizer, tasks: Mapping[str, Sequence[MCItem]], **kwargs) -> list[TaskResult]:
    """:func:`evaluate_items` for every task with at least one doc, in the given order."""
    return [evaluate_items(model, tokenizer, items, **kwargs) for items in tasks.values() if items]
