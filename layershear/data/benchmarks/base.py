"""Core data types of the benchmark layer: one multiple-choice document and one task definition.

The strings kept in :class:`MCItem` are exactly the (context, continuation) request pairs that
lm-evaluation-harness builds for ``output_type: multiple_choice`` at 0-shot (see
``shared/data/benchmarks/FORMATS.md``). lm-eval's ``_encode_pair`` whitespace move is *not* applied
here; the tokenising code calls :func:`split_whitespace` on each pair, as lm-eval does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layershear.errors import BenchmarkError

TARGET_DELIMITER = " "
"""lm-eval's default ``target_delimiter``, prepended to every continuation."""

Row = Mapping[str, Any]
DocToItem = Callable[[Row, str, int], "MCItem"]
"""Converter signature: ``(hf_row, task_name, doc_id) -> MCItem``."""
ReadLocal = Callable[[Path, str], list[dict[str, Any]]]
"""Local reader signature: ``(benchmarks_dir, split) -> HF-format rows``."""


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice document, as lm-eval scores it.

    Attributes:
        task: Registry name, e.g. ``"hellaswag"``.
        doc_id: 0-based row index within the split it was loaded from.
        contexts: One context per choice. Single-context tasks repeat the same string; WinoGrande
            ("multiple input") holds the per-option partial sentences.
        continuations: One per choice, with the target delimiter included (``" yes"``, ``" A"``).
        gold: Index of the correct choice.
        choice_lengths: ``acc_norm`` divisors: Python ``len()`` (characters, not bytes) of each
            choice string without the delimiter. For WinoGrande, ``len(option_i)`` (lm-eval reports
            no ``acc_norm`` there).
        description: lm-eval's ``description``, the start of every context (MMLU's subject line);
            few-shot examples go between it and the document's own text (:meth:`with_fewshot`).

    Raises:
        BenchmarkError: The tuples differ in length, there are fewer than 2 choices, or ``gold``
            is out of range.
    """

    task: str
    doc_id: int
    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int
    choice_lengths: tuple[int, ...]
    description: str = ""

    def __post_init__(self) -> None:
        where = f"{self.task} doc {self.doc_id}"
        if not all(c.startswith(self.description) for c in self.contexts):
            raise BenchmarkError(f"{where}: a context does not start with the description {self.description!r}")
        n = len(self.continuations)
        if len(self.contexts) != n or len(self.choice_lengths) != n:
            raise BenchmarkError(
                f"{where}: {len(self.contexts)} contexts, {n} continuations and "
                f"{len(self.choice_lengths)} choice lengths; all three must be equal"
            )
        if n < 2:
            raise BenchmarkError(f"{where}: {n} choice(s); a multiple-choice item needs at least 2")
        if isinstance(self.gold, bool) or not isinstance(self.gold, int):
            raise BenchmarkError(f"{where}: gold={self.gold!r} is not an int")
        if not 0 <= self.gold < n:
            raise BenchmarkError(f"{where}: gold={self.gold} is out of range for {n} choices")

    @property
    def num_choices(self) -> int:
        """Number of choices (>= 2)."""
        return len(self.continuations)

    def shot(self) -> str:
        """This document as one few-shot example: its text, the target delimiter and the gold choice.

        lm-eval's ``build_qa_turn`` renders ``doc_to_text + target_delimiter + choices[gold]``; for
        multiple-input tasks (WinoGrande) the text is the gold option's context. The description and
        the ``fewshot_delimiter`` are not included.
        """
        return self.contexts[self.gold][len(self.description):] + self.continuations[self.gold]

    def with_fewshot(self, prefix: str) -> MCItem:
        """A copy whose every context is ``description + prefix + text`` (lm-eval's ``fewshot_context``)."""
        n = len(self.description)
        return dataclasses.replace(self, contexts=tuple(self.description + prefix + c[n:] for c in self.contexts))


def choice_item(task: str, doc_id: int, context: str, choices: Sequence[str], gold: int, *,
                description: str = "") -> MCItem:
    """Build a single-context item: ``(description + context, " " + choice)`` for each choice, lm-eval style."""
    choices = [str(c) for c in choices]
    context = description + context
    return MCItem(
        task=task,
        doc_id=doc_id,
        contexts=(context,) * len(choices),
        continuations=tuple(TARGET_DELIMITER + c for c in choices),
        gold=gold,
        choice_lengths=tuple(len(c) for c in choices),
        description=description,
    )


def split_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing whitespace of ``context`` onto ``continuation`` (lm-eval ``_encode_pair``).

    Example:
        >>> split_whitespace("Answer: ", "yes")
        ('Answer:', ' yes')
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        return context[:-n_spaces], context[-n_spaces:] + continuation
    return context, continuation


def random_accuracy(items: Sequence[MCItem]) -> float:
    """Random-guess accuracy r(D): the mean of ``1 / num_choices`` over ``items``.

    Raises:
        BenchmarkError: ``items`` is empty.
    """
    if not items:
        raise BenchmarkError("random_accuracy() needs at least one item")
    return sum(1.0 / item.num_choices for item in items) / len(items)


def as_int(value: Any, name: str) -> int:
    """Parse an integer label stored as int, bool or numeric string; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError(f"field {name!r} = {value!r} is not an integer label")


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark as lm-eval defines it, plus where its data lives.

    Attributes:
        name: Registry name (``"arc_easy"``, ``"mmlu"``, ...).
        hub_path: ``dataset_path`` of the lm-eval YAML (``datasets.load_dataset`` path).
        hub_name: ``dataset_name`` of the lm-eval YAML, or ``None``.
        eval_split: The split lm-eval scores (``test_split`` if the task has one, else validation).
        train_split: The split to calibrate on (lm-eval's ``training_split``; see each task module).
        measures: Accuracy measures the lm-eval YAML reports (its ``metric_list``), ``("acc", "acc_norm")``
            or ``("acc",)``.
        fields: HF-format row fields the converter reads (used in error messages).
        structured_fields: Fields holding lists or dicts; CSV/TSV cells in these are JSON-decoded.
        doc_to_item: Converter from one HF-format row to an :class:`MCItem`.
        local_files: Split name -> paths (relative to the ``benchmarks`` folder) that must exist
            for that split to be read locally.
        read_local: Reader mapping the shared files of one split onto HF-format rows.
        output_type: lm-eval's ``output_type``: ``multiple_choice`` (:class:`MCItem`), ``generate_until``
            (GSM8K) or ``loglikelihood_rolling`` (raw-text corpora scored by next-token accuracy).
        fewshot_split: the split few-shot examples come from (lm-eval: ``fewshot_split``, else
            ``training_split``); None = the task takes no few-shot examples.
        fewshot_sampler: lm-eval's ``fewshot_config.sampler``: ``default`` (seeded random sample per
            document) or ``first_n`` (the first n of the split, MMLU).
        num_fewshot: the lm-eval YAML's ``num_fewshot`` (0 unless it sets one: GSM8K has 5).
    """

    name: str
    hub_path: str
    hub_name: str | None
    eval_split: str
    train_split: str
    measures: tuple[str, ...]
    fields: tuple[str, ...]
    doc_to_item: DocToItem = field(repr=False, compare=False)
    local_files: Mapping[str, tuple[str, ...]] = field(repr=False, compare=False)
    read_local: ReadLocal = field(repr=False, compare=False)
    structured_fields: tuple[str, ...] = ()
    output_type: str = "multiple_choice"
    fewshot_split: str | None = None
    fewshot_sampler: str = "default"
    num_fewshot: int = 0

    def to_items(self, rows: Iterable[Row]) -> list[MCItem]:
        """Convert HF-format rows to items; ``doc_id`` is the row's position in ``rows``.

        Raises:
            BenchmarkError: A row lacks a field, or holds a value the converter cannot use.
        """
        items = []
        for doc_id, row in enumerate(rows):
            try:
                items.append(self.doc_to_item(row, self.name, doc_id))
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                raise BenchmarkError(
                    f"{self.name} row {doc_id}: cannot convert ({type(e).__name__}: {e}); "
                    f"expected the {self.hub_path} fields: {', '.join(self.fields)}"
                ) from e
        return items
