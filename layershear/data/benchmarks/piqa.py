"""PIQA, lm-eval ``piqa`` (``lm_eval/tasks/piqa/piqa.yaml``, ``baber/piqa``).

Format: context ``"Question: {goal}\\nAnswer:"``, choices ``[sol1, sol2]``, gold ``label``.
Scored on ``validation``; measures acc and acc_norm.

Local copy: the original ``piqa/valid.jsonl`` with labels from ``piqa/valid-labels.lst`` (aligned
line by line). No local train split (only the train labels are staged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layershear.data.benchmarks.base import MCItem, Row, TaskSpec, as_int, choice_item
from layershear.data.benchmarks.local import read_jsonl, read_lines
from layershear.errors import BenchmarkError

_VALID = "piqa/valid.jsonl"
_LABELS = "piqa/valid-labels.lst"


def doc_to_item(row: Row, task: str, doc_id: int) -> MCItem:
    """Convert a ``baber/piqa`` row (``goal``, ``sol1``, ``sol2``, ``label``)."""
    context = f"Question: {row['goal']}\nAnswer:"
    return choice_item(task, doc_id, context, (row["sol1"], row["sol2"]), as_int(row["label"], "label"))


def read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """Read the validation split: ``valid.jsonl`` plus ``valid-labels.lst``."""
    docs = read_jsonl(data_dir / _VALID)
    labels = read_lines(data_dir / _LABELS)
    if len(docs) != len(labels):
        raise BenchmarkError(f"{data_dir / _VALID}: {len(docs)} rows but {len(labels)} labels in {_LABELS}")
    return [{**doc, "label": int(label)} for doc, label in zip(docs, labels, strict=True)]


PIQA = TaskSpec(
    name="piqa",
    hub_path="baber/piqa",
    hub_name=None,
    eval_split="validation",
    train_split="train",
    fewshot_split="train",
    measures=("acc", "acc_norm"),
    fields=("goal", "sol1", "sol2", "label"),
    doc_to_item=doc_to_item,
    local_files={"validation": (_VALID, _LABELS)},
    read_local=read_local,
)
