"""GSM8K, lm-eval ``gsm8k`` (``lm_eval/tasks/gsm8k/gsm8k.yaml``, lm-evaluation-harness 0.4.13).

A generative task (``output_type: generate_until``), not multiple choice: the model writes an answer,
which a regex filter reduces to a number that is compared with the gold one
(:mod:`layershear.scoring.generative`).

Format: ``doc_to_text`` ``"Question: {question}\\nAnswer:"``, ``doc_to_target`` ``"{answer}"`` (the
whole worked solution, ending ``"#### <number>"``). Generation is greedy and stops at
``"Question:"``, ``"</s>"`` or ``"<|im_end|>"`` (lm-eval's HFLM adds the tokenizer's EOS text).
Scored on ``test``; 5 few-shot examples from ``train`` with the default sampler, each rendered as
``text + " " + answer + "\\n\\n"`` (:meth:`GenItem.shot`, :mod:`layershear.data.benchmarks.fewshot`).

Local copy: ``gsm8k/train.jsonl`` and ``gsm8k/test.jsonl`` (the ``openai/gsm8k`` ``main`` rows,
fields ``question`` and ``answer``, in Hub order).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layershear.data.benchmarks.base import TARGET_DELIMITER, Row, TaskSpec
from layershear.data.benchmarks.local import read_jsonl
from layershear.errors import BenchmarkError

UNTIL = ("Question:", "</s>", "<|im_end|>")
"""``generation_kwargs.until`` of ``gsm8k.yaml``."""
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class GenItem:
    """One generative document (lm-eval ``output_type: generate_until``).

    Attributes:
        task: Registry name, ``"gsm8k"``.
        doc_id: 0-based row index within the split it was loaded from.
        context: The prompt the model continues: ``description`` + few-shot examples + the document's
            own text (``"Question: ...\\nAnswer:"`` at 0-shot).
        target: The gold ``doc_to_target`` string (GSM8K: the whole solution, ending ``"#### 18"``).
        until: Stop strings; the generated text is cut at the first occurrence of each.
        description: lm-eval's ``description``, the start of ``context`` (empty for GSM8K).

    Raises:
        BenchmarkError: ``context`` does not start with ``description``, or ``until`` holds a
            non-string or an empty string.
    """

    task: str
    doc_id: int
    context: str
    target: str
    until: tuple[str, ...] = UNTIL
    description: str = ""

    def __post_init__(self) -> None:
        where = f"{self.task} doc {self.doc_id}"
        if not self.context.startswith(self.description):
            raise BenchmarkError(f"{where}: the context does not start with the description {self.description!r}")
        if not all(isinstance(s, str) and s for s in self.until):
            raise BenchmarkError(f"{where}: until={self.until!r}; every stop string must be a non-empty str")

    def shot(self) -> str:
        """This document as one few-shot example: ``text + " " + target`` (lm-eval ``build_qa_turn``;
        no description, no ``"\\n\\n"`` delimiter)."""
        return self.context[len(self.description):] + TARGET_DELIMITER + self.target

    def with_fewshot(self, prefix: str) -> GenItem:
        """A copy whose context is ``description + prefix + text`` (lm-eval ``fewshot_context``)."""
        n = len(self.description)
        return dataclasses.replace(self, context=self.description + prefix + self.context[n:])


def doc_to_item(row: Row, task: str, doc_id: int) -> GenItem:
    """Convert an ``openai/gsm8k`` row (``question``, ``answer``) to its 0-shot :class:`GenItem`.

    Raises:
        KeyError: a field is missing. ValueError: a field is not a string.
    """
    question, answer = row["question"], row["answer"]
    if not isinstance(question, str) or not isinstance(answer, str):
        raise ValueError(f"question and answer must be strings, got {type(question).__name__} and "
                         f"{type(answer).__name__}")
    return GenItem(task, doc_id, f"Question: {question}\nAnswer:", answer)


def read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """Read ``gsm8k/{train,test}.jsonl`` (``data_dir``: the ``benchmarks`` folder)."""
    return read_jsonl(data_dir / "gsm8k" / f"{split}.jsonl")


GSM8K = TaskSpec(
    name="gsm8k",
    hub_path="openai/gsm8k",
    hub_name="main",
    eval_split="test",
    train_split="train",
    measures=("exact_match,strict-match", "exact_match,flexible-extract"),
    fields=("question", "answer"),
    doc_to_item=doc_to_item,  # type: ignore[arg-type]   # a GenItem, not an MCItem
    local_files={split: (f"gsm8k/{split}.jsonl",) for split in _SPLITS},
    read_local=read_local,
    output_type="generate_until",
    fewshot_split="train",
    fewshot_sampler="default",
    num_fewshot=5,
)
