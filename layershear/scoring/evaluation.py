"""Held-out evaluation: lm-eval style acc / acc_norm (with standard errors) per task; text corpora by
next-token accuracy and token perplexity (:mod:`layershear.scoring.text`).

Each task's documents are scored in one pass of the log-likelihood engine
(:func:`layershear.engine.loglikelihood.loglikelihood`, lm-eval's ``LM.loglikelihood`` seam), then
reduced as lm-eval's ``multiple_choice`` tasks do: every measure the task's lm-eval YAML lists
(acc, and acc_norm where listed), with lm-eval's standard error of the mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from layershear.data.benchmarks import MCItem, get_task, random_accuracy
from layershear.data.benchmarks.text import TextDoc
from layershear.engine.config import EngineConfig
from layershear.engine.loglikelihood import ProgressFn, loglikelihood
from layershear.engine.requests import requests_by_item, requests_of
from layershear.errors import ScoringError
from layershear.scoring.accuracy import correct, item_scores, model_accuracy, stderr
from layershear.scoring.text import CHUNK_TOKENS, expand_text, output_vocab_size


@dataclass(frozen=True)
class TaskResult:
    """One task's scores; ``values``/``stderrs`` map measure name (acc, acc_norm: a fraction in [0, 1];
    ``perplexity`` for text corpora) to its value."""

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
    if isinstance(items[0], TextDoc):
        return _evaluate_text(model, tokenizer, items, removed=removed, batch_size=batch_size, max_length=max_length,
                              engine=engine, on_progress=on_progress)
    lls = loglikelihood(model, tokenizer, requests_of(items), removed=removed, batch_size=batch_size,
                        max_length=max_length, add_bos=add_bos, engine=engine, on_progress=on_progress, label=task)
    values, errs = {}, {}
    for measure in get_task(task).measures:
        ok = correct(items, item_scores(items, lls, measures=[measure] * len(items))).double()
        values[measure], errs[measure] = float(ok.mean()), stderr(ok)
    return TaskResult(task, len(items), values, errs, random_accuracy(items))


def _evaluate_text(model, tokenizer, docs: Sequence[TextDoc], *, removed: Iterable[int], chunk_tokens: int = CHUNK_TOKENS,
                   **kwargs) -> TaskResult:
    """Next-token accuracy (with its standard error over tokens) and token perplexity of text documents
    (:mod:`layershear.scoring.text`); ``num_docs`` counts documents, r(D) is 1 / vocabulary size."""
    items = expand_text(docs, tokenizer, vocab_size=output_vocab_size(model), chunk_tokens=chunk_tokens)
    requests = requests_of(items)
    lls = loglikelihood(model, tokenizer, requests, removed=removed, label=docs[0].task, **kwargs)
    result = model_accuracy(frozenset(removed), items, ["acc"] * len(items), requests_by_item(requests, len(items)), lls)
    task = docs[0].task
    ok = torch.tensor(result.correct, dtype=torch.float64)
    return TaskResult(task, len(docs), {"acc": result.accuracy, "perplexity": result.perplexity_by_task[task]},
                      {"acc": stderr(ok), "perplexity": float("nan")}, result.random)


def evaluate_suite(model, tokenizer, tasks: Mapping[str, Sequence[MCItem]], **kwargs) -> list[TaskResult]:
    """:func:`evaluate_items` for every task with at least one doc, in the given order; generative
    tasks (GSM8K) go to :func:`layershear.scoring.generative.evaluate_generative`."""
    from layershear.scoring.generative import evaluate_generative, is_generative

    return [(evaluate_generative if is_generative(items) else evaluate_items)(model, tokenizer, items, **kwargs)
            for items in tasks.values() if items]
