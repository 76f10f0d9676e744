"""Draw the calibration set D from a recipe, and the held-out evaluation docs that exclude it."""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from layershear.data.benchmarks import MCItem, TaskSpec, get_task, load_split, local_splits
from layershear.data.benchmarks.fewshot import apply_fewshot
from layershear.data.recipes import LOCAL_FALLBACK_SPLIT, CalibrationRecipe, CalibTask, EvalSuite
from layershear.errors import RecipeError

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskDraw:
    """What calibration took from one task: ``doc_ids`` of ``split`` (``pool_size`` docs in it), each
    with ``num_fewshot`` examples from ``fewshot_split``."""

    task: str
    split: str
    requested_split: str
    doc_ids: tuple[int, ...]
    pool_size: int
    note: str | None = None
    num_fewshot: int = 0
    fewshot_split: str | None = None


@dataclass(frozen=True)
class CalibrationSet:
    """The calibration set D: items in draw order, and where each came from."""

    recipe: str
    seed: int
    draws: tuple[TaskDraw, ...]
    items: tuple[MCItem, ...]

    @property
    def notes(self) -> list[str]:
        return [d.note for d in self.draws if d.note]

    def used(self) -> dict[tuple[str, str], frozenset[int]]:
        """(task, split) -> doc ids used for calibration; evaluation must skip them."""
        used: dict[tuple[str, str], frozenset[int]] = {}
        for d in self.draws:
            used[(d.task, d.split)] = used.get((d.task, d.split), frozenset()) | frozenset(d.doc_ids)
        return used


def _local_split(task: str, wanted: str, fallback: str | None, source: str, data_dir: Path | None, *,
                 purpose: str, fix: str) -> str | None:
    """``None`` when ``wanted`` is to be read (the Hub, the local copy has it, or ``auto`` with no local
    copy), else ``fallback`` where the local copy has it.

    Raises:
        RecipeError: the local copy lacks both; the message says what the split was for (``purpose``)
            and what to do (``fix``).
    """
    if source == "hub":
        return None
    have = local_splits(task, data_dir)
    if wanted in have or (source == "auto" and not have):
        return None
    if fallback is None or fallback not in have:
        raise RecipeError(f"{task}: the local copy has no {wanted!r} split{purpose} (it has: "
                          f"{', '.join(have) or 'none'}){fix}")
    return fallback


def _choose_split(entry: CalibTask, source: str, data_dir: Path | None) -> tuple[str, str | None]:
    fallback = _local_split(entry.task, entry.split, entry.fallback_split or LOCAL_FALLBACK_SPLIT.get(entry.task),
                            source, data_dir, purpose="",
                            fix=" and the recipe names no fallback_split; add one or use --data-source hub")
    if fallback is None:
        return entry.split, None
    scored = get_task(entry.task).eval_split
    held_out = " and evaluation skips these docs" if fallback == scored else ""
    note = entry.note or (f"{entry.task}: no local {entry.split!r} split; calibrating on a seeded sample of "
                          f"{fallback!r}{held_out}")
    return fallback, note


def num_fewshot_of(spec: TaskSpec, requested: int | None, override: int | None = None) -> int:
    """Examples per document of ``spec``: ``override`` (``--num-fewshot``, ignored by tasks that take
    none, such as the text corpora), else ``requested`` (the recipe's), else the lm-eval YAML's.

    Raises:
        RecipeError: a recipe asks for few-shot examples on a task that takes none.
    """
    if override is not None and spec.fewshot_split is not None:
        return override
    n = spec.num_fewshot if requested is None else requested
    if n and spec.fewshot_split is None:
        raise RecipeError(f"{spec.name} takes no few-shot examples (lm-eval output_type {spec.output_type}); "
                          "remove its num_fewshot")
    return n


def _fewshot_split(spec: TaskSpec, source: str, data_dir: Path | None) -> tuple[str, str | None]:
    """The split few-shot examples come from, and a note when the local copy lacks lm-eval's."""
    wanted = spec.fewshot_split
    fallback = _local_split(spec.name, wanted, LOCAL_FALLBACK_SPLIT.get(spec.name), source, data_dir,
                            purpose=" for few-shot examples", fix="; use --data-source hub or --num-fewshot 0")
    if fallback is None:
        return wanted, None
    return fallback, (f"{spec.name}: no local {wanted!r} split; few-shot examples come from {fallback!r} "
                      f"(lm-eval draws them from {wanted!r}), so prompts differ from lm-eval's")


def with_fewshot(docs: list[MCItem], split: str, num_fewshot: int, *, source: str = "auto",
                 data_dir: Path | None = None) -> tuple[list[MCItem], str | None, str | None]:
    """``docs`` (every document of ``split`` of one task, in order) with lm-eval's few-shot contexts.

    Returns:
        ``(documents, few-shot split or None, note or None)``; unchanged documents at 0 shots.
    """
    if not num_fewshot or not docs:
        return docs, None, None
    spec = get_task(docs[0].task)
    pool_split, note = _fewshot_split(spec, source, data_dir)
    pool = docs if pool_split == split else load_split(spec.name, pool_split, source=source, data_dir=data_dir)
    shots = apply_fewshot(docs, pool, num_fewshot, sampler=spec.fewshot_sampler, same_split=pool_split == split,
                          task=spec.name)
    if note:
        LOG.info(note)
    return shots, pool_split, note


def _sample(entry: CalibTask, pool: int, seed: int, split: str) -> list[int]:
    k = entry.count if entry.count is not None else max(1, round(entry.fraction * pool))
    rng = random.Random(seed ^ zlib.crc32(f"{entry.task}/{split}".encode()))
    return sorted(rng.sample(range(pool), min(k, pool)))


def build_calibration(recipe: CalibrationRecipe, *, source: str = "auto", data_dir: Path | None = None,
                      num_fewshot: int | None = None) -> CalibrationSet:
    """Draw D: per task, a seeded sample of the recipe's split (or its local fallback).

    Args:
        recipe: from :func:`layershear.data.recipes.load_calibration`.
        source: ``auto`` (local copies when found, else the Hub), ``local`` or ``hub``.
        data_dir: the benchmarks folder (default: found by ``find_data_dir``).
        num_fewshot: few-shot examples for every task that takes them (lm-eval ``--num_fewshot``);
            None = each task's recipe entry, else its lm-eval default (:func:`num_fewshot_of`).

    Returns:
        The calibration set; the same recipe, seed and data always give the same documents.

    Raises:
        RecipeError: a split is missing with no fallback. BenchmarkError: data cannot be read.
    """
    draws, items = [], []
    for entry in recipe.tasks:
        split, note = _choose_split(entry, source, data_dir)
        docs = load_split(entry.task, split, source=source, data_dir=data_dir)
        shots = num_fewshot_of(get_task(entry.task), entry.num_fewshot, num_fewshot)
        docs, shot_split, shot_note = with_fewshot(docs, split, shots, source=source, data_dir=data_dir)
        picked = [docs[i] for i in _sample(entry, len(docs), recipe.seed, split)]
        if note:
            LOG.info(note)
        note = "; ".join(n for n in (note, shot_note) if n) or None
        draws.append(TaskDraw(entry.task, split, entry.split, tuple(d.doc_id for d in picked), len(docs), note,
                              shots, shot_split))
        items.extend(picked)
    return CalibrationSet(recipe.name, recipe.seed, tuple(draws), tuple(items))


def build_eval(suite: EvalSuite, *, exclude: Mapping[tuple[str, str], frozenset[int]] | None = None,
               source: str = "auto", data_dir: Path | None = None,
               num_fewshot: int | None = None) -> dict[str, list[MCItem]]:
    """Docs of each suite task, minus those used for calibration, then the first ``limit``.

    Args:
        suite: from :func:`layershear.data.recipes.load_eval_suite`.
        exclude: (task, split) -> doc ids to skip (``CalibrationSet.used()``), so no example used for
            calibration is ever evaluated.
        num_fewshot: as :func:`build_calibration`. Few-shot contexts are drawn over the whole split
            before documents are skipped, so a document's examples do not depend on the exclusions.

    Returns:
        task -> items, in the suite's task order.
    """
    exclude = exclude or {}
    out: dict[str, list[MCItem]] = {}
    for entry in suite.tasks:
        split = entry.split or get_task(entry.task).eval_split
        skip = exclude.get((entry.task, split), frozenset())
        docs = load_split(entry.task, split, source=source, data_dir=data_dir)
        shots = num_fewshot_of(get_task(entry.task), entry.num_fewshot, num_fewshot)
        docs = [d for d in with_fewshot(docs, split, shots, source=source, data_dir=data_dir)[0] if d.doc_id not in skip]
        if not docs:
            raise RecipeError(f"{entry.task}/{split}: no documents left after skipping the {len(skip)} used for "
                              "calibration; calibrate on a smaller fraction or evaluate another split")
        out[entry.task] = docs[:entry.limit] if entry.limit else docs
    return out
