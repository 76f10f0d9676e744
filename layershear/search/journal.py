"""The journal of a search: every scored model and every finished step, appended as it happens, so an
interrupted run (Ctrl-C, SIGTERM, SIGKILL, a lost machine) resumes where it stopped.

The journal is a JSON-lines file. Its first line (the *head*) holds what the results depend on: the
settings, the model's identity and a hash of the calibration documents; a journal is only replayed
into a run with the same head. Each later line is one record, written with a single ``write`` and
``fsync``: ``model`` (one model's accuracy), ``children`` (every candidate of one parent, scored
together) or ``step`` (a depth of the search is complete). A run killed mid-write leaves at most one
incomplete last line, which is dropped on resume.

Replaying is exact: a resumed search asks for the same models in the same order, gets the recorded
:class:`ModelAccuracy` for those already scored (floats round-trip through JSON exactly) and scores
the rest as an uninterrupted run would, so its removals and relevances are the same. Replayed
models count against an evaluation budget (``--search-budget N``) as if scored; a block-token budget
counts only the forwards this run computes. The evolutionary search's staged (partial) evaluations
are not recorded: a resumed run computes them again, and gets the same numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layershear.errors import JournalError
from layershear.scoring.accuracy import ModelAccuracy
from layershear.search.beam import AccuracyFn, ChildrenFn, StepFn
from layershear.search.result import SearchStep

#: format of the journal; a journal of another version is refused
VERSION = 1


def journal_path(out: str | os.PathLike) -> Path:
    """Where the journal of a run writing ``out`` lives: ``OUT.journal.jsonl`` beside it."""
    out = Path(out)
    return out.parent / f"{out.name}.journal.jsonl"


def _to_json(acc: ModelAccuracy) -> dict[str, Any]:
    return {"removed": sorted(acc.removed), "accuracy": acc.accuracy, "random": acc.random, "gold_prob": acc.gold_prob,
            "accuracy_by_task": acc.accuracy_by_task, "random_by_task": acc.random_by_task,
            "correct": "".join("1" if c else "0" for c in acc.correct), "exact": acc.exact, "sequences": acc.sequences}


def _from_json(d: Mapping[str, Any]) -> ModelAccuracy:
    return ModelAccuracy(removed=frozenset(d["removed"]), accuracy=d["accuracy"], random=d["random"],
                         gold_prob=d["gold_prob"], accuracy_by_task=dict(d["accuracy_by_task"]),
                         random_by_task=dict(d["random_by_task"]), correct=tuple(c == "1" for c in d["correct"]),
                         exact=d["exact"], sequences=d["sequences"])


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def head_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: journal's value -> this run's value`` for every setting that differs (dotted keys)."""
    a, b = _flat(json.loads(json.dumps(old))), _flat(json.loads(json.dumps(new)))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _read(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """(head, records, byte length of the complete lines); an incomplete last line is left out."""
    data = path.read_bytes()
    lines, good = [], 0
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break                       # a write cut short by a kill
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError as e:
            raise JournalError(f"journal {path} is damaged at byte {good} ({e.msg}); pass --restart to discard it") from e
        good += len(raw)
    if not lines:
        return None, [], 0
    return lines[0], lines[1:], good


@dataclass(frozen=True)
class JournalSummary:
    """What a journal holds: complete search steps and models scored."""

    steps: int
    models: int


def summarize(path: str | os.PathLike) -> JournalSummary:
    """Count the complete steps and the scored models recorded in the journal at ``path`` (0 if none)."""
    path = Path(path)
    if not path.is_file():
        return JournalSummary(0, 0)
    _, records, _ = _read(path)
    steps = sum(1 for r in records if r.get("kind") == "step")
    models = sum(len(r["results"]) if r.get("kind") == "children" else 1 for r in records if r.get("kind") != "step")
    return JournalSummary(steps, models)


class SearchJournal:
    """Record a search's scored models and steps in ``path``, and replay those of an earlier run.

    Args:
        path: the journal file (:func:`journal_path`).
        head: what the results depend on (settings, model identity, calibration hash); JSON-able.
        write: read the file and append records; False: neither (the ranks of a distributed run
            other than rank 0, which get rank 0's records through :meth:`state` / :meth:`load_state`).

    Raises:
        JournalError: an existing journal with another head (the message lists what differs) or
            another version, or a damaged line before the last.
    """

    def __init__(self, path: str | os.PathLike, head: Mapping[str, Any], *, write: bool = True) -> None:
        self.path = Path(path)
        self.head = {"journal": VERSION, **head}
        self.write = write
        self.models: dict[frozenset[int], ModelAccuracy] = {}
        self.parents: dict[frozenset[int], dict[int, ModelAccuracy]] = {}
        self.steps_recorded = 0
        self.replayed = 0                 # models served from the journal in this run
        self.served: set[frozenset[int]] = set()      # the distinct sets served (they count against a budget)
        old, records, good = _read(self.path) if write and self.path.is_file() else (None, [], 0)
        if old is not None:
            diff = head_differences(old, self.head)
            if diff:
                raise JournalError(f"journal {self.path} was written by a run with other settings ({'; '.join(diff[:4])}"
                                   f"{'; ...' if len(diff) > 4 else ''}); rerun with its settings, or pass --restart "
                                   "to discard it")
            self._load(records)
            if write and good < self.path.stat().st_size:
                os.truncate(self.path, good)          # drop the incomplete last line
        elif write:
            self._append(self.head, new=True)

    def state(self) -> tuple:
        """What was replayed from the file: (models, parents, steps recorded), to send to other ranks."""
        return self.models, self.parents, self.steps_recorded

    def load_state(self, state: tuple) -> None:
        """Take another rank's :meth:`state` (rank 0's, so that every rank replays the same models)."""
        self.models, self.parents, self.steps_recorded = state

    @property
    def resumed(self) -> bool:
        """Whether an earlier run's records were found."""
        return bool(self.models or self.parents)

    def _load(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            kind = record.get("kind")
            if kind == "model":
                acc = _from_json(record["result"])
                self.models[acc.removed] = acc
            elif kind == "children":
                self.parents[frozenset(record["parent"])] = {int(b): _from_json(r) for b, r in record["results"].items()}
            elif kind == "step":
                self.steps_recorded = max(self.steps_recorded, int(record["depth"]))

    def _append(self, record: Mapping[str, Any], *, new: bool = False) -> None:
        if not self.write:
            return
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        try:
            with open(self.path, "wb" if new else "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if new:
                _fsync_folder(self.path.parent)
        except OSError as e:
            raise JournalError(f"cannot write the journal {self.path}: {e.strerror or e}; free space or make the "
                               "folder writable, then resume") from e

    def known(self, removed: frozenset[int]) -> ModelAccuracy | None:
        """The recorded accuracy of the model without ``removed`` (as a model or as a child), else None."""
        key = frozenset(removed)
        if key in self.models:
            return self.models[key]
        for parent, children in self.parents.items():
            if parent < key and len(key - parent) == 1:
                (b,) = key - parent
                if b in children:
                    return children[b]
        return None

    def accuracy(self, score: AccuracyFn) -> AccuracyFn:
        """``score`` with its results recorded, and served from the journal when recorded before."""

        def accuracy(removed: frozenset[int]) -> ModelAccuracy:
            key = frozenset(removed)
            if key in self.models:
                self.replayed += 1
                self.served.add(key)
                return self.models[key]
            acc = self.models[key] = score(key)
            self._append({"kind": "model", "result": _to_json(acc)})
            return acc

        return accuracy

    def children(self, score: ChildrenFn) -> ChildrenFn:
        """``score`` (all candidates of one parent) recorded per parent, served from the journal when
        that parent's candidates were all recorded before; otherwise they are all scored again."""

        def children(parent: frozenset[int], blocks: list[int]) -> dict[int, ModelAccuracy]:
            key, blocks = frozenset(parent), list(blocks)
            known = self.parents.get(key, {})
            if blocks and all(b in known for b in blocks):
                self.replayed += len(blocks)
                self.served.update(key | {b} for b in blocks)
                return {b: known[b] for b in blocks}
            result = score(key, blocks)
            self.parents[key] = {**known, **result}
            self._append({"kind": "children", "parent": sorted(key),
                          "results": {str(b): _to_json(acc) for b, acc in result.items()}})
            return result

        return children

    def on_step(self, report: StepFn | None = None) -> StepFn:
        """A step callback that records each complete depth, then calls ``report``."""

        def on_step(depth: int, total: int, step: SearchStep) -> None:
            if depth > self.steps_recorded:
                self.steps_recorded = depth
                self._append({"kind": "step", "depth": depth, "removed": sorted(step.after.removed)})
            if report is not None:
                report(depth, total, step)

        return on_step


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["VERSION", "JournalSummary", "SearchJournal", "head_differences", "journal_path", "summarize"]
