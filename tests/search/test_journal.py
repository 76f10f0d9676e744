"""SearchJournal on its own: exact round trips of every ModelAccuracy field (racing estimates included),
replay per parent, and the head check."""

from __future__ import annotations

import pytest

from layershear.errors import JournalError
from layershear.scoring.accuracy import ModelAccuracy
from layershear.search.journal import SearchJournal, head_differences, summarize


def _acc(removed, accuracy=0.625, exact=True) -> ModelAccuracy:
    return ModelAccuracy(removed=frozenset(removed), accuracy=accuracy, random=1 / 3, gold_prob=0.1 + 0.2,
                         accuracy_by_task={"piqa": accuracy}, random_by_task={"piqa": 0.5},
                         correct=(True, False, True), exact=exact, sequences=7)


def test_records_round_trip_exactly_and_replay_without_scoring(tmp_path):
    path, calls = tmp_path / "j.jsonl", []

    def children(parent, blocks):
        calls.append((parent, tuple(blocks)))
        return {b: _acc(parent | {b}, accuracy=b / 7, exact=b != 2) for b in blocks}   # block 2: a racing estimate

    first = SearchJournal(path, {"settings": {"k": 1}})
    scored = first.children(children)(frozenset({0}), [1, 2, 3])
    full = first.accuracy(lambda removed: _acc(removed))(frozenset())
    again = SearchJournal(path, {"settings": {"k": 1}})
    assert again.resumed and summarize(path).models == 4
    replay = again.children(lambda p, b: pytest.fail("scored again"))(frozenset({0}), [1, 2, 3])
    assert replay == scored and [r.exact for r in replay.values()] == [True, False, True]
    assert again.accuracy(lambda removed: pytest.fail("scored again"))(frozenset()) == full
    assert again.replayed == 4 and len(calls) == 1
    again.children(children)(frozenset({0}), [1, 2, 3, 4])          # a parent not fully recorded: all scored again
    assert calls[-1] == (frozenset({0}), (1, 2, 3, 4))


def test_other_head_is_refused_with_its_differences(tmp_path):
    path = tmp_path / "j.jsonl"
    SearchJournal(path, {"settings": {"k": 2, "engine": "fast"}, "calibration": {"documents": "ab"}})
    with pytest.raises(JournalError, match=r"\(calibration.documents: 'ab' -> 'cd'; settings.k: 2 -> 1\)"):
        SearchJournal(path, {"settings": {"k": 1, "engine": "fast"}, "calibration": {"documents": "cd"}})
    assert head_differences({"a": {"b": 1}}, {"a": {"b": 1}, "c": None}) == []


def test_a_reader_does_not_write(tmp_path):
    path = tmp_path / "j.jsonl"
    reader = SearchJournal(path, {"settings": {}}, write=False)     # ranks > 0 of a torchrun group
    reader.accuracy(lambda removed: _acc(removed))(frozenset())
    assert not path.exists()
