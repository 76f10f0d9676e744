"""AI2 ARC (Easy and Challenge), lm-eval ``arc_easy`` / ``arc_challenge``.

Format (``lm_eval/tasks/arc/arc_easy.yaml``): context ``"Question: {question}\\nAnswer:"``, choices
``choices.text`` (3-5 of them), gold ``choices.label.index(answerKey)``; some items use labels
``"1"``-``"4"``. Scored on ``test``; measures acc and acc_norm.

Local copy: the original AI2 jsonl (``ARC-*-Test.jsonl`` = test, ``ARC-*-Dev.jsonl`` = validation).
There is no usable local train split (``llm-adapters/train.json`` is a lossy conversion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layershear.data.benchmarks.base import MCItem, ReadLocal, Row, TaskSpec, choice_item
from layershear.data.benchmarks.local import read_jsonl

_FILES = {
    "arc_easy": ("ARC-Easy", "arc_easy"),
    "arc_challenge": ("ARC-Challenge", "arc_challenge"),
}


def doc_to_item(row: Row, task: str, doc_id: int) -> MCItem:
    """Convert an ``allenai/ai2_arc`` row (``question``, ``choices.{text,label}``, ``answerKey``)."""
    labels = list(row["choices"]["label"])
    return choice_item(
        task,
        doc_id,
        f"Question: {row['question']}\nAnswer:",
        row["choices"]["text"],
        labels.index(row["answerKey"]),
    )


def ai2_to_row(doc: dict[str, Any]) -> dict[str, Any]:
    """Map an original AI2 ARC jsonl object onto the ``allenai/ai2_arc`` row format."""
    choices = doc["question"]["choices"]
    return {
        "id": doc["id"],
        "question": doc["question"]["stem"],
        "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
        "answerKey": doc["answerKey"],
    }


def _local_files(task: str) -> dict[str, tuple[str, ...]]:
    stem, folder = _FILES[task]
    return {"test": (f"{folder}/{stem}-Test.jsonl",), "validation": (f"{folder}/{stem}-Dev.jsonl",)}


def _make_reader(task: str) -> ReadLocal:
    files = _local_files(task)

    def read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
        return [ai2_to_row(doc) for doc in read_jsonl(data_dir / files[split][0])]

    return read_local


def _spec(task: str) -> TaskSpec:
    return TaskSpec(
        name=task,
        hub_path="allenai/ai2_arc",
        hub_name=_FILES[task][0],
        eval_split="test",
        train_split="train",
        fewshot_split="train",
        measures=("acc", "acc_norm"),
        fields=("question", "choices", "answerKey"),
        structured_fields=("choices",),
        doc_to_item=doc_to_item,
        local_files=_local_files(task),
        read_local=_make_reader(task),
    )


ARC_EASY = _spec("arc_easy")
ARC_CHALLENGE = _spec("arc_challenge")
