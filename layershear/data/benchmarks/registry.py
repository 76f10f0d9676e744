"""The task registry and the public loaders: by name and split, or from a user file."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from layershear.data.benchmarks.arc import ARC_CHALLENGE, ARC_EASY
from layershear.data.benchmarks.base import MCItem, TaskSpec
from layershear.data.benchmarks.boolq import BOOLQ
from layershear.data.benchmarks.gsm8k import GSM8K
from layershear.data.benchmarks.hellaswag import HELLASWAG
from layershear.data.benchmarks.hub import load_hub_rows
from layershear.data.benchmarks.local import (
    DATA_ENV,
    find_data_dir,
    read_arrow_dir,
    read_json,
    read_jsonl,
    read_parquet,
    read_table,
)
from layershear.data.benchmarks.mmlu import MMLU, hendrycks_rows, read_folder
from layershear.data.benchmarks.openbookqa import OPENBOOKQA
from layershear.data.benchmarks.piqa import PIQA
from layershear.data.benchmarks.text import TEXT_TASKS
from layershear.data.benchmarks.winogrande import WINOGRANDE
from layershear.errors import BenchmarkError

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (ARC_EASY, ARC_CHALLENGE, BOOLQ, HELLASWAG, OPENBOOKQA, PIQA, WINOGRANDE, MMLU, GSM8K, *TEXT_TASKS)
}
SOURCES = ("auto", "local", "hub")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}


def get_task(name: str) -> TaskSpec:
    """Look a task up by its registry name.

    Raises:
        BenchmarkError: Unknown name; the message suggests close matches and lists all tasks.
    """
    try:
        return TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, TASKS, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise BenchmarkError(f"Unknown task {name!r}.{hint} Available: {', '.join(TASKS)}") from None


def local_splits(task: str, data_dir: Path | None = None) -> tuple[str, ...]:
    """Splits of ``task`` whose files exist in the local copy, e.g. ``("test", "validation")``.

    Args:
        task: Registry name.
        data_dir: The ``benchmarks`` folder; found with :func:`find_data_dir` when ``None``.

    Returns:
        Sorted split names; empty when no local data folder is found.
    """
    spec = get_task(task)
    root = find_data_dir(data_dir)
    if root is None:
        return ()
    return tuple(
        sorted(split for split, files in spec.local_files.items() if all((root / f).exists() for f in files))
    )


def _missing_split(spec: TaskSpec, split: str, root: Path | None) -> BenchmarkError:
    if root is None:
        where = f"no local benchmark folder was found (set {DATA_ENV} to shared/data/benchmarks)"
    else:
        have = local_splits(spec.name, root)
        where = f"the local copy in {root} has: {', '.join(have) or 'none'}"
    return BenchmarkError(
        f"Task {spec.name} has no local split {split!r}; {where}. Use one of those splits, "
        f"set {DATA_ENV}, or use source='hub' with network access"
    )


def load_split(
    task: str, split: str, *, source: str = "auto", data_dir: Path | None = None
) -> list[MCItem]:
    """Load one split of a task as lm-eval-formatted items.

    Args:
        task: Registry name, e.g. ``"hellaswag"``.
        split: ``"train"``, ``"validation"`` (``"val"`` also works), ``"test"`` or, for mmlu, ``"dev"``.
        source: ``"local"`` (shared files only), ``"hub"`` (``datasets.load_dataset``) or
            ``"auto"`` (local when the local copy has the split, else the Hub).
        data_dir: The ``benchmarks`` folder; found with :func:`find_data_dir` when ``None``.

    Returns:
        Items in file order, ``doc_id`` 0..N-1.

    Raises:
        BenchmarkError: Unknown task or source, missing local split, Hub failure, or bad rows.

    Example:
        >>> items = load_split("arc_easy", "test", source="local")
        >>> items[0].continuations[0]
        ' Sunlight is the source of energy for nearly all ecosystems.'
    """
    spec = get_task(task)
    if source not in SOURCES:
        raise BenchmarkError(f"Unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    split = _SPLIT_ALIASES.get(split, split)
    root = find_data_dir(data_dir) if source != "hub" else None
    have = local_splits(task, root) if root is not None else ()
    if source == "hub":
        return spec.to_items(load_hub_rows(spec, split))
    if source == "auto" and split not in have:
        try:
            rows = load_hub_rows(spec, split)
        except BenchmarkError as e:
            raise BenchmarkError(f"{_missing_split(spec, split, root)}. The Hub fallback failed: {e}") from e
        return spec.to_items(rows)
    if root is None or split not in have:
        raise _missing_split(spec, split, root)
    return spec.to_items(spec.read_local(root, split))


def _read_file(spec: TaskSpec, path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        return read_json(path)
    if suffix == ".parquet":
        return read_parquet(path)
    if suffix in (".csv", ".tsv"):
        if spec.name == "mmlu" and suffix == ".csv" and not _has_header(path, "question"):
            return hendrycks_rows(path)
        return read_table(path, spec.structured_fields)
    raise BenchmarkError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .csv, .tsv or .parquet")


def _has_header(path: Path, column: str) -> bool:
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    return column in [c.strip().strip('"') for c in first.rstrip("\r\n").split(",")]


def load_path(task: str, path: str | os.PathLike[str]) -> list[MCItem]:
    """Load a user-supplied file or folder whose rows use the HF format of ``task``.

    Accepted: ``.jsonl``; ``.json`` (a list of rows); ``.csv``/``.tsv`` with a header (list-valued
    fields such as ``choices`` as JSON or as dotted columns ``choices.text``/``choices.label``);
    ``.parquet``; a ``datasets`` ``save_to_disk`` folder of one split; and for mmlu a folder of
    headerless Hendrycks CSVs (``<subject>_<split>.csv``) or one such file.

    Raises:
        BenchmarkError: Unknown task, missing path, unsupported format, or rows that do not convert.
    """
    spec = get_task(task)
    p = Path(path).expanduser()
    if not p.exists():
        raise BenchmarkError(f"Benchmark path not found: {p}")
    if p.is_file():
        return spec.to_items(_read_file(spec, p))
    if any(p.glob("*.arrow")) or (p / "dataset_dict.json").exists():
        return spec.to_items(read_arrow_dir(p))
    if spec.name == "mmlu" and any(p.glob("*.csv")):
        return spec.to_items(read_folder(p))
    raise BenchmarkError(
        f"{p}: folder is neither a datasets save_to_disk folder"
        + (" nor a folder of Hendrycks MMLU CSVs" if spec.name == "mmlu" else "")
    )
