"""Few-shot contexts exactly as lm-evaluation-harness 0.4.13 builds them (``lm_eval/api/samplers.py``,
``ConfigurableTask.fewshot_context`` and ``build_qa_turn`` in ``lm_eval/api/task.py``).

A document's context becomes ``description + shot_1 + "\\n\\n" + ... + shot_n + "\\n\\n" + text``, where a
shot is another document rendered with its answer (:meth:`MCItem.shot`: ``text + " " + gold choice``).
The examples come from the task's few-shot split, chosen by one of lm-eval's samplers:

* ``default`` (``ContextSampler``): one ``random.Random(seed)`` per task (lm-eval's
  ``fewshot_random_seed``, 1234 by default), and for each evaluated document *in split order*
  ``rnd.sample(pool, n)``; when the pool is the document's own split, ``rnd.sample(pool, n + 1)`` with
  the document removed, then the first n. The examples therefore differ from document to document,
  and the draw of document k depends on the documents before it: layershear always draws over the
  whole split in order, so each document gets the examples lm-eval gives it when it scores that split.
* ``first_n`` (``FirstNSampler``, MMLU): the first n documents of the pool, the same for every
  document. MMLU is 57 lm-eval tasks, one per subject, each with its own pool: the pool here is the
  few-shot split's documents with the same ``description`` (subject line).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from layershear.errors import BenchmarkError

FEWSHOT_DELIMITER = "\n\n"
"""lm-eval's default ``fewshot_delimiter``, after every few-shot example."""
FEWSHOT_SEED = 1234
"""lm-eval's default ``fewshot_random_seed`` (``simple_evaluate``, ``--seed``'s third value)."""
SAMPLERS = ("default", "first_n")


class Shot(Protocol):
    """What a few-shot document provides (:class:`~layershear.data.benchmarks.base.MCItem`, GSM8K's item)."""

    doc_id: int
    description: str

    def shot(self) -> str: ...

    def with_fewshot(self, prefix: str) -> Shot: ...


T = TypeVar("T", bound=Shot)


def _draw(rnd: random.Random | None, pool: Sequence[Shot], item: Shot, n: int, same_split: bool) -> list[Shot]:
    if rnd is None:                                   # first_n
        candidates = [p for p in pool if not (same_split and p.doc_id == item.doc_id)]
        return candidates[:n]
    if same_split:
        return [p for p in rnd.sample(pool, n + 1) if p.doc_id != item.doc_id][:n]
    return rnd.sample(pool, n)


def apply_fewshot(items: Sequence[T], pool: Sequence[Shot], num_fewshot: int, *, sampler: str = "default",
                  seed: int = FEWSHOT_SEED, same_split: bool = False, task: str = "") -> list[T]:
    """Give every document of one task its ``num_fewshot`` examples, as lm-eval does.

    Args:
        items: every document of the split, in split order (the default sampler's draw for a
            document depends on the documents before it).
        pool: the few-shot split's documents in split order (lm-eval's ``fewshot_docs()``).
        num_fewshot: examples per document; 0 returns ``items`` unchanged.
        sampler: ``default`` or ``first_n`` (see the module docstring).
        seed: the default sampler's seed (lm-eval ``fewshot_random_seed``).
        same_split: the pool is the documents' own split: a document is never its own example
            (lm-eval removes the evaluated document when ``fewshot_split == test_split``).
        task: the task name, for error messages.

    Returns:
        New documents in the same order, each context ``description + shots + text``.

    Raises:
        BenchmarkError: unknown sampler, negative ``num_fewshot``, or a pool too small for it.
    """
    if sampler not in SAMPLERS:
        raise BenchmarkError(f"Unknown few-shot sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if num_fewshot < 0:
        raise BenchmarkError(f"num_fewshot must be >= 0, got {num_fewshot}")
    if num_fewshot == 0:
        return list(items)
    groups: dict[str, list[Shot]] = {}
    for p in pool:
        groups.setdefault(p.description if sampler == "first_n" else "", []).append(p)
    rnd = random.Random(seed) if sampler == "default" else None
    out = []
    for item in items:
        candidates = groups.get(item.description if sampler == "first_n" else "", [])
        need = num_fewshot + (1 if same_split and rnd is not None else 0)
        if len(candidates) < need:
            where = f" for {item.description.strip()!r}" if sampler == "first_n" and item.description else ""
            raise BenchmarkError(f"{task or 'task'}: {len(candidates)} few-shot documents{where}, fewer than the "
                                 f"{num_fewshot} asked for; lower --num-fewshot")
        shots = _draw(rnd, candidates, item, num_fewshot, same_split)
        out.append(item.with_fewshot("".join(s.shot() + FEWSHOT_DELIMITER for s in shots)))
    return out
