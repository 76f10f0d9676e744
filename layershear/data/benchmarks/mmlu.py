"""MMLU (57 subjects as one task), lm-eval ``mmlu`` (``mmlu/default/_default_template_yaml``).

Format (0-shot): description ``"The following are multiple choice questions (with answers) about
{subject with _ -> space}.\\n\\n"`` + ``"{question.strip()}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer:"``,
choices ``["A", "B", "C", "D"]`` (continuations ``" A"`` .. ``" D"``), gold ``answer`` (0-3).
Scored on ``test``; metric acc (the group weights subtasks by size, i.e. a plain mean over items).

``train_split`` is ``"validation"``, not the Hub's ``auxiliary_train``: the auxiliary rows have
no subject (so no description) and are not MMLU questions. lm-eval itself draws few-shot examples
from ``dev`` (5 per subject).

Local copy: the Hendrycks CSVs ``mmlu/data/{dev,val,test}/<subject>_<split>.csv`` (no header:
question, A, B, C, D, answer letter); local ``val`` is exposed as ``validation``. Rows are ordered
by subject name, then file row; ``doc_id`` is the position in that concatenation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layershear.data.benchmarks.base import MCItem, Row, TaskSpec, as_int, choice_item
from layershear.data.benchmarks.local import read_csv_rows
from layershear.errors import BenchmarkError

LETTERS = ("A", "B", "C", "D")
_FOLDERS = {"dev": "dev", "validation": "val", "test": "test"}
_SPLIT_SUFFIXES = ("_dev", "_val", "_test", "_validation")


def description(subject: str) -> str:
    """lm-eval's per-subject ``description`` (the 0-shot prompt prefix)."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def _answer(value: Any) -> int:
    if isinstance(value, str) and value.strip() in LETTERS:
        return LETTERS.index(value.strip())
    return as_int(value, "answer")


def doc_to_item(row: Row, task: str, doc_id: int) -> MCItem:
    """Convert a ``cais/mmlu`` row (``question``, ``subject``, ``choices`` (4), ``answer``)."""
    subject, choices = row["subject"], list(row["choices"])
    if not subject:
        raise ValueError("empty 'subject'; the description needs it")
    if len(choices) != len(LETTERS):
        raise ValueError(f"{len(choices)} choices; MMLU needs 4")
    body = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=True))
    context = f"{row['question'].strip()}\n{body}\nAnswer:"
    return choice_item(task, doc_id, context, LETTERS, _answer(row["answer"]), description=description(subject))


def subject_of(path: Path) -> str:
    """Subject name of a Hendrycks CSV: the file name minus ``_<split>.csv``."""
    stem = path.stem
    for suffix in _SPLIT_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def hendrycks_rows(path: Path, subject: str | None = None) -> list[dict[str, Any]]:
    """Read one headerless Hendrycks CSV into ``cais/mmlu`` rows."""
    subject = subject or subject_of(path)
    rows = []
    for line_no, cells in enumerate(read_csv_rows(path), start=1):
        if len(cells) != 6:
            raise BenchmarkError(f"{path}:{line_no}: {len(cells)} columns; expected question,A,B,C,D,answer")
        rows.append({"question": cells[0], "subject": subject, "choices": cells[1:5], "answer": cells[5]})
    return rows


def read_folder(folder: Path) -> list[dict[str, Any]]:
    """Read every ``*.csv`` of a Hendrycks split folder, sorted by subject, then file row."""
    files = sorted(folder.glob("*.csv"), key=lambda p: (subject_of(p), p.name))
    if not files:
        raise BenchmarkError(f"{folder}: no <subject>_<split>.csv files")
    return [row for file in files for row in hendrycks_rows(file)]


def read_local(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """Read ``dev``, ``validation`` (data/val) or ``test`` from ``mmlu/data``."""
    return read_folder(data_dir / "mmlu" / "data" / _FOLDERS[split])


MMLU = TaskSpec(
    name="mmlu",
    hub_path="cais/mmlu",
    hub_name="all",
    eval_split="test",
    train_split="validation",
    fewshot_split="dev",
    fewshot_sampler="first_n",
    measures=("acc",),
    fields=("question", "subject", "choices", "answer"),
    structured_fields=("choices",),
    doc_to_item=doc_to_item,
    local_files={split: (f"mmlu/data/{folder}",) for split, folder in _FOLDERS.items()},
    read_local=read_local,
)
