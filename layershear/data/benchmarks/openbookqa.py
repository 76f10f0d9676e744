"""OpenBookQA (main), lm-eval ``openbookqa`` (``lm_eval/tasks/openbookqa/openbookqa.yaml``).

Format: context ``question_stem`` (no wrapper), choices ``choices.text`` (4), gold
``choices.label.index(answerKey.lstrip())``. Scored on ``test``; measures acc and acc_norm.

Local copy: the original ``Main/{train,dev,test}.tsv`` (dev = validation), columns ``ID``,
``Question Stem``, ``Choices`` as ``"(A) ... (B) ... (C) ... (D) ..."``, ``Complete Question``,
``Answer Key``. One train row (``12-1145``) really has 5 choices labelled A, B, C, D, D; it is
kept as is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from layershear.data.benchmarks.base import MCItem, Row, TaskSpec, choice_item
from layershear.data.benchmarks.local import read_csv_rows
from layershear.errors import BenchmarkError

_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_LABEL = re.compile(r"(?:^| )\(([A-Z])\) ")


def doc_to_item(row: Row, task: str, doc_id: int) -> MCItem:
    """Convert an ``allenai/openbookqa`` main row (``question_stem``, ``choices``, ``answerKey``)."""
    labels = list(row["choices"]["label"])
    gold = labels.index(row["answerKey"].lstrip())
    return choice_item(task, doc_id, row["question_stem"], row["choices"]["text"], gold)


def parse_choices(cell: str) -> dict[str, list[str]]:
    """Split ``"(A) x (B) y ..."`` into ``{"text": [...], "label": [...]}`` (HF layout)."""
    parts = _LABEL.split(cell)
    if parts[0] != "" or len(parts) < 5:
        raise BenchmarkError(f"OpenBookQA choices cell not in '(A) ... (B) ...' form: {cell[:80]!r}")
    return {"text": parts[2::2], "label": parts[1::2]}


def tsv_to_rows(path: Path) -> list[dict[str, Any]]:
    """Read an original OpenBookQA ``Main/*.tsv`` file into ``allenai/openbookqa`` rows."""
    header, *body = read_csv_rows(path, delimiter="\t", quotes=False)
    if header[:3] != ["ID", "Question Stem", "Choices"] or header[-1] != "Answer Key":
        raise BenchmarkError(f"{path}: unexpected header {header}")
    return [
        {"id": r[0], "question_stem": r[1], "choices": parse_choices(r[2]), "answerKey": r[-1]}
        for r in body
    ]


def read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """Read ``train``, ``validation`` (dev.tsv) or ``test`` from ``openbookqa/Main``."""
    return tsv_to_rows(data_dir / "openbookqa" / "Main" / _FILES[split])


OPENBOOKQA = TaskSpec(
    name="openbookqa",
    hub_path="allenai/openbookqa",
    hub_name="main",
    eval_split="test",
    train_split="train",
    fewshot_split="train",
    measures=("acc", "acc_norm"),
    fields=("question_stem", "choices", "answerKey"),
    structured_fields=("choices",),
    doc_to_item=doc_to_item,
    local_files={split: (f"openbookqa/Main/{name}",) for split, name in _FILES.items()},
    read_local=read_local,
)
