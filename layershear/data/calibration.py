"""Draw the calibration set D from a recipe, and the held-out evaluation docs that exclude it."""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from layershear.data.benchmarks import MCItem, get_task, load_split, local_splits
from layershear.data.recipes import LOCAL_FALLBACK_SPLIT, CalibrationRecipe, CalibTask, EvalSuite
from layershear.errors import RecipeError

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskDraw:
    """What calibration took from one task: ``doc_ids`` of ``split`` (``pool_size`` docs in it)."""

    task: str
    split: str
    requested_split: str
    doc_ids: tuple[int, ...]
    pool_size: int
    note: str | None = None


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


def _choose_split(entry: CalibTask, source: str, data_dir: Path | None) -> tuple[str, str | None]:
    if source == "hub":
        return entry.split, None
    have = local_splits(entry.task, data_dir)
    if entry.split in have or (source == "auto" and not have):
        return entry.split, None
    fallback = entry.fallback_split or LOCAL_FALLBACK_SPLIT.get(entry.task)
    if fallback is None or fallback not in have:
        raise RecipeError(f"{entry.task}: the local copy has no {entry.split!r} split (it has: {', '.join(have) or 'none'}) "
                          "and the recipe names no fallback_split; add one or use --data-source hub")
    scored = get_task(entry.task).eval_split
    held_out = " and evaluation skips these docs" if fallback == scored else ""
    note = entry.note or (f"{entry.task}: no local {entry.split!r} split; calibrating on a seeded sample of "
                          f"{fallback!r}{held_out}")
    return fallback, note


def _sample(entry: CalibTask, pool: int, seed: int, split: str) -> list[int]:
    k = entry.count if entry.count is not None else max(1, round(entry.fraction * pool))
    rng = random.Random(seed ^ zlib.crc32(f"{entry.task}/{split}".encode()))
    return sorted(rng.sample(range(pool), min(k, pool)))


def build_calibration(recipe: CalibrationRecipe, *, source: str = "auto",
                      data_dir: Path | None = None) -> CalibrationSet:
    """Draw D: per task, a seeded sample of the recipe's split (or its local fallback).

    Args:
        recipe: from :func:`layershear.data.recipes.load_calibration`.
        source: ``auto`` (local copies when found, else the Hub), ``local`` or ``hub``.
        data_dir: the benchmarks folder (default: found by ``find_data_dir``).

    Returns:
        The calibration set; the same recipe, seed and data always give the same documents.

    Raises:
        RecipeError: a split is missing with no fallback. BenchmarkError: data cannot be read.
    """
    draws, items = [], []
    for entry in recipe.tasks:
        split, note = _choose_split(entry, source, data_dir)
        docs = load_split(entry.task, split, source=source, data_dir=data_dir)
        picked = [docs[i] for i in _sample(entry, len(docs), recipe.seed, split)]
        if note:
            LOG.info(note)
        draws.append(TaskDraw(entry.task, split, entry.split, tuple(d.doc_id for d in picked), len(docs), note))
        items.extend(picked)
    return CalibrationSet(recipe.name, recipe.seed, tuple(draws), tuple(items))


def build_eval(suite: EvalSuite, *, exclude: Mapping[tuple[str, str], frozenset[int]] | None = None,
               source: str = "auto", data_dir: Path | None = None) -> dict[str, list[MCItem]]:
    """Docs of each suite task, minus those used for calibration, then the first ``limit``.

    Args:
        suite: from :func:`layershear.data.recipes.load_eval_suite`.
        exclude: (task, split) -> doc ids to skip (``CalibrationSet.used()``), so no example used for
            calibration is ever evaluated.

    Returns:
        task -> items, in the suite's task order.
    """
    exclude = exclude or {}
    out: dict[str, list[MCItem]] = {}
    for entry in suite.tasks:
        split = entry.split or get_task(entry.task).eval_split
        skip = exclude.get((entry.task, split), frozenset())
        docs = [d for d in load_split(entry.task, split, source=source, data_dir=data_dir) if d.doc_id not in skip]
        if not docs:
            raise RecipeError(f"{entry.task}/{split}: no documents left after skipping the {len(skip)} used for "
                              "calibration; calibrate on a smaller fraction or evaluate another split")
        out[entry.task] = docs[:entry.limit] if entry.limit else docs
    return out
