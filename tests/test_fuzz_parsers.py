"""Fuzz the parsers of user input with hypothesis: every input gives a result or one LayershearError.

Covered: calibration recipes and eval suites (``--calib``, ``--tasks``, ``--eval``: a name, a YAML
path or an inline ``task:amount,...`` list), ``--max-shard-size`` (:func:`parse_size`) and block
lists (``--remove``: :func:`parse_blocks`). A valid input must parse to the values it spells; an
invalid one must raise the parser's own error class with a non-empty, one-line message, never any
other exception. The ``@example`` inputs are the ones that crashed or printed several lines before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from layershear.cli.options import parse_blocks
from layershear.data.benchmarks import TASKS
from layershear.data.recipes import CalibrationRecipe, EvalSuite, available_recipes, load_calibration, load_eval_suite
from layershear.errors import ExportError, LayershearError, RecipeError
from layershear.export.exporter import parse_size

FUZZ = settings(derandomize=True, max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
QUICK = settings(FUZZ, max_examples=60)

TASK_NAMES = sorted(TASKS)
JUNK = ["١", "٥", "۳", "\u2028", "\x85", "\x00", "ß", "∞", "é", "\u200b", "🙂", "\ufeff", "/", "_", "+", "yaml"]
TOKENS = TASK_NAMES + [":", ",", ".", "-", "e", "E", "inf", "nan", " ", "\t", "\n", *list("0123456789"), *JUNK]

NUMBERS = st.one_of(st.integers(-(10**30), 10**30).map(str), st.floats(allow_nan=True).map(str),
                    st.sampled_from(["", "١", "٥٠", "1_000", "+5", " 5", "1e3", "0x10", "9" * 5000]))
#: ``task:amount`` entries with a real or junk task name and a real or junk amount.
entries = st.tuples(st.sampled_from(TASK_NAMES) | st.text(max_size=6), st.sampled_from(["", ":", " : ", "::"]),
                    NUMBERS | st.text(alphabet="0123456789.-+e ", max_size=6)).map("".join)
#: Specs glued from task names, separators, number characters and unicode junk, or entry lists.
specs = st.one_of(st.lists(st.sampled_from(TOKENS), max_size=14).map("".join), st.text(max_size=40),
                  st.lists(entries, max_size=5).map(",".join))
#: Sizes as ``--max-shard-size`` or the Python API might be given them.
UNITS = ["GB", "MB", "KB", "GiB", "MiB", "KiB", "gb", "Gb", "mib", "B", "TB", "", " GB", "G"]
sizes = st.one_of(st.integers(), st.booleans(), st.floats(), st.none(), st.text(max_size=20),
                  st.tuples(NUMBERS, st.sampled_from(UNITS)).map("".join))

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), st.text(max_size=12),
                    st.sampled_from(TASK_NAMES), st.sampled_from(["train", "validation", "test", "calibration", "eval"]))
ANY_YAML = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=12)
TASK_KEYS = ["task", "fraction", "count", "split", "fallback_split", "note", "limit", "splt"]
task_entries = st.dictionaries(st.sampled_from(TASK_KEYS), SCALARS, max_size=4)
#: Mostly recipe-shaped documents (right keys, random values) so that validation is reached.
recipe_docs = st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["calibration", "eval", "other"]) | SCALARS, "name": SCALARS, "description": SCALARS,
    "seed": SCALARS, "tasks": st.lists(task_entries, max_size=4) | ANY_YAML, "extra": ANY_YAML,
})

DEEP_LIST = "[" * 3000 + "]" * 3000
DEEP_MAP = "{a: " * 1500 + "1" + "}" * 1500


def one_line_error(error: LayershearError, kind: type[LayershearError], *words: str) -> None:
    """``error`` is a ``kind`` whose message is one non-empty line containing one of ``words``."""
    message = str(error)
    assert isinstance(error, kind), f"{type(error).__name__}: {message}"
    assert message and message.splitlines() == [message], f"not one line: {message!r}"
    assert not words or any(w in message.lower() for w in words), message


def outcome(parse: Callable[[Any], Any], arg: Any) -> Any:
    """``parse(arg)``, or the LayershearError it raised; any other exception fails the test."""
    try:
        return parse(arg)
    except LayershearError as e:
        return e


def check_calibration(result: Any) -> None:
    if isinstance(result, LayershearError):
        one_line_error(result, RecipeError, "recipe", "task", "amount")
        return
    assert isinstance(result, CalibrationRecipe) and result.tasks
    names = [t.task for t in result.tasks]
    assert set(names) <= set(TASKS) and len(set(names)) == len(names)
    for t in result.tasks:
        assert (t.fraction is None) != (t.count is None)
        assert t.count is None or (isinstance(t.count, int) and t.count >= 1)
        assert t.fraction is None or 0.0 < t.fraction <= 1.0


def check_eval(result: Any) -> None:
    if isinstance(result, LayershearError):
        one_line_error(result, RecipeError, "recipe", "task", "amount", "suite")
        return
    assert isinstance(result, EvalSuite) and result.tasks
    names = [t.task for t in result.tasks]
    assert set(names) <= set(TASKS) and len(set(names)) == len(names)
    assert all(t.limit is None or (isinstance(t.limit, int) and t.limit >= 1) for t in result.tasks)


@pytest.fixture(scope="module")
def yaml_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file, rewritten by every example (hypothesis runs examples one after another)."""
    return tmp_path_factory.mktemp("fuzz_yaml") / "recipe.yaml"


# -- inline / named specs -------------------------------------------------------------------------


@FUZZ
@given(spec=specs)
@example(spec="")                       # was an empty recipe with no tasks
@example(spec=" , ")
@example(spec="a" * 300)                # OSError: File name too long (Path.is_file)
@example(spec="piqa:" + "9" * 5000)     # OSError, then ValueError: int() of more than 4300 digits
@example(spec="a\nb:5.0")               # two-line message (task name in the pydantic error)
@example(spec="a\u2028b:5.0")
@example(spec="piqa:1e999")
@example(spec="piqa:nan")
@example(spec="x\x00.yaml")
@example(spec="eval-paper")
def test_calibration_spec_is_a_recipe_or_one_error(spec: str) -> None:
    check_calibration(outcome(load_calibration, spec))


@FUZZ
@given(spec=specs)
@example(spec="")
@example(spec="a" * 300)
@example(spec="piqa:" + "9" * 5000)
@example(spec="piqa:0.5")               # limits are whole numbers; the hint was task:0.1 (fraction)
@example(spec="piqa:0")
@example(spec="mix10")
def test_eval_spec_is_a_suite_or_one_error(spec: str) -> None:
    check_eval(outcome(load_eval_suite, spec))


def test_nasty_specs_give_the_intended_answer() -> None:
    assert [(t.task, t.count) for t in load_calibration("piqa:٥").tasks] == [("piqa", 5)]
    assert [(t.task, t.limit) for t in load_eval_suite(" piqa , boolq:7 ,").tasks] == [("piqa", None), ("boolq", 7)]
    with pytest.raises(RecipeError, match="names no task"):
        load_calibration(" , ")
    with pytest.raises(RecipeError, match=r"Bad amount in 'piqa:0\.5'; write task:200"):
        load_eval_suite("piqa:0.5")
    with pytest.raises(RecipeError, match="Bad amount"):
        load_calibration("piqa:" + "9" * 5000)


amounts = st.one_of(st.integers(1, 10**40).map(lambda n: (str(n), "count", n)),
                    st.floats(1e-300, 1.0).map(lambda f: (repr(f), "fraction", f)))


@FUZZ
@given(picks=st.lists(st.tuples(st.sampled_from(TASK_NAMES), amounts), min_size=1, max_size=8, unique_by=lambda p: p[0]),
       pad=st.sampled_from(["", " ", "  ", "\t"]))
def test_valid_inline_calibration_parses_to_what_it_says(picks: list[tuple[str, tuple[str, str, float]]], pad: str) -> None:
    spec = ",".join(f"{pad}{task}{pad}:{pad}{text}{pad}" for task, (text, _, _) in picks)
    recipe = load_calibration(spec)
    assert isinstance(recipe, CalibrationRecipe) and recipe.name == spec
    got = [(t.task, "count" if t.count is not None else "fraction", t.count or t.fraction) for t in recipe.tasks]
    assert got == [(task, field, value) for task, (_, field, value) in picks]


@FUZZ
@given(picks=st.lists(st.tuples(st.sampled_from(TASK_NAMES), st.none() | st.integers(1, 10**40)), min_size=1, max_size=8,
                      unique_by=lambda p: p[0]))
def test_valid_inline_eval_suite_parses_to_what_it_says(picks: list[tuple[str, int | None]]) -> None:
    spec = ", ".join(task if limit is None else f"{task}:{limit}" for task, limit in picks)
    suite = load_eval_suite(spec)
    assert isinstance(suite, EvalSuite) and [(t.task, t.split, t.limit) for t in suite.tasks] == [(t, None, n) for t, n in picks]


@pytest.mark.parametrize("kind", ["calibration", "eval"])
def test_named_recipes_load_as_their_kind_only(kind: str) -> None:
    right, wrong = (load_calibration, load_eval_suite) if kind == "calibration" else (load_eval_suite, load_calibration)
    for name in available_recipes(kind):
        assert right(name).name
        with pytest.raises(RecipeError, match=f"is a '{kind}' recipe, not"):
            wrong(name)


@QUICK
@given(picks=st.lists(st.sampled_from(TASK_NAMES), min_size=1, max_size=4), negative=st.integers(max_value=-1) | st.floats(1.0001, 1e300))
def test_out_of_range_amounts_are_one_error(picks: list[str], negative: float) -> None:
    spec = ",".join(f"{t}:{negative}" for t in dict.fromkeys(picks))
    for load in (load_calibration, load_eval_suite):
        with pytest.raises(RecipeError) as info:
            load(spec)
        one_line_error(info.value, RecipeError, "amount", "fraction", "count", "greater than")


# -- YAML files -----------------------------------------------------------------------------------


@FUZZ
@given(doc=st.one_of(recipe_docs, ANY_YAML))
@example(doc={"tasks": []})                                          # was an empty recipe
@example(doc={"x\ny": 1, "tasks": [{"task": "piqa", "count": 3}]})   # key in the message: two lines
@example(doc={"kind": "calibration", "tasks": [{"task": "a\nb"}]})   # task name in the message: two lines
@example(doc={"tasks": [{"task": "piqa", "count": 10**30}, {"task": "boolq", "limit": 5}]})
def test_yaml_documents_are_a_recipe_or_one_error(doc: Any, yaml_path: Path) -> None:
    yaml_path.write_text(yaml.safe_dump(doc))
    check_calibration(outcome(load_calibration, str(yaml_path)))
    check_eval(outcome(load_eval_suite, str(yaml_path)))


@FUZZ
@given(text=st.one_of(st.text(max_size=60), st.lists(st.sampled_from(["kind:", " calibration", "tasks:", "\n", "  - ", "{", "}", "[",
                                                                      "]", "task: piqa", ", count: 5", "&a", "*a", "? ", "!!", "'",
                                                                      '"', "\t", "%YAML 1.1", "---", "2001-02-30"]),
                                                     max_size=16).map("".join)))
@example(text=DEEP_LIST)                # RecursionError from yaml's constructor
@example(text=DEEP_MAP)
@example(text="? [a]\n: b\n")           # a yaml error of eight lines in the message
@example(text="a: [")
@example(text="seed: 2001-02-30\ntasks: [{task: piqa, count: 1}]")
@example(text="kind: calibration\ntasks:\n  - {task: piqa, count: 5}\n")
def test_yaml_text_is_a_recipe_or_one_error(text: str, yaml_path: Path) -> None:
    yaml_path.write_text(text)
    check_calibration(outcome(load_calibration, str(yaml_path)))
    check_eval(outcome(load_eval_suite, str(yaml_path)))


@QUICK
@given(data=st.binary(max_size=40))
@example(data=b"\xff\xfe tasks")
def test_yaml_bytes_are_a_recipe_or_one_error(data: bytes, yaml_path: Path) -> None:
    yaml_path.write_bytes(data)
    check_calibration(outcome(load_calibration, str(yaml_path)))


@QUICK
@given(tasks=st.lists(st.tuples(st.sampled_from(TASK_NAMES), st.integers(1, 10**6)), min_size=1, max_size=8, unique_by=lambda p: p[0]),
       seed=st.integers(-(10**20), 10**20))
def test_valid_yaml_recipe_round_trips(tasks: list[tuple[str, int]], seed: int, yaml_path: Path) -> None:
    yaml_path.write_text(yaml.safe_dump({"kind": "calibration", "seed": seed, "tasks": [{"task": t, "count": n} for t, n in tasks]}))
    recipe = load_calibration(str(yaml_path))
    assert recipe.name == "recipe" and recipe.seed == seed and [(t.task, t.count) for t in recipe.tasks] == tasks


def test_nasty_yaml_messages(yaml_path: Path) -> None:
    yaml_path.write_text(DEEP_LIST)
    with pytest.raises(RecipeError, match="nested too deeply"):
        load_calibration(str(yaml_path))
    yaml_path.write_text("? [a]\n: b\n")
    with pytest.raises(RecipeError, match=r"found unhashable key at line 1, column 3; fix the YAML syntax$"):
        load_calibration(str(yaml_path))
    yaml_path.write_text("tasks: []\n")
    with pytest.raises(RecipeError, match="no tasks"):
        load_eval_suite(str(yaml_path))


# -- --max-shard-size -----------------------------------------------------------------------------

FACTORS = {"GB": 10**9, "MB": 10**6, "KB": 10**3, "GiB": 2**30, "MiB": 2**20, "KiB": 2**10}


@FUZZ
@given(size=sizes)
@example(size=True)                      # was returned as a size of 1 byte
@example(size="1.5GiB")
@example(size="GB")
@example(size="")
@example(size="9" * 5000 + "GB")
@example(size="-5GB")
@example(size=0)
@example(size=math.inf)
def test_size_is_positive_bytes_or_one_error(size: Any) -> None:
    result = outcome(parse_size, size)
    if isinstance(result, LayershearError):
        one_line_error(result, ExportError, "size")
    else:
        assert type(result) is int and result > 0


@FUZZ
@given(n=st.integers(1, 10**30), unit=st.sampled_from(sorted(FACTORS)))
@example(n=5, unit="GB")
def test_valid_sizes_are_exact(n: int, unit: str) -> None:
    assert parse_size(f"{n}{unit}") == n * FACTORS[unit] and parse_size(n) == n


def test_nasty_sizes() -> None:
    assert parse_size("١GB") == 10**9           # int() reads every Unicode decimal digit, as save_pretrained does
    for bad in (True, False, 0, -1, "1.5GiB", "GB", "", "5", 5.0, None):
        with pytest.raises(ExportError, match="positive size"):
            parse_size(bad)


# -- --remove -------------------------------------------------------------------------------------

block_texts = st.one_of(st.lists(st.sampled_from([*list("0123456789"), ",", " ", "-", "+", "e", ".", "_", *JUNK]), max_size=14).map("".join),
                        st.text(max_size=20), st.lists(NUMBERS | st.sampled_from(JUNK), max_size=5).map(",".join))


@FUZZ
@given(text=block_texts)
@example(text=" ")
@example(text="1,,2")
@example(text="-1")                      # was [-1]; callers refused it only after loading the model (score)
@example(text="1e3")
@example(text="9" * 5000)
@example(text="١")                       # was [1]
@example(text="+3")                      # was [3]
def test_block_list_is_indices_or_one_error(text: str) -> None:
    result = outcome(parse_blocks, text)
    if isinstance(result, LayershearError):
        one_line_error(result, LayershearError, "--remove")
    else:
        assert result and result == sorted(set(result)) and all(type(b) is int and b >= 0 for b in result)
        assert {str(b) for b in result} == {x.strip().lstrip("0") or "0" for x in text.split(",") if x.strip()}


@FUZZ
@given(blocks=st.lists(st.integers(0, 10**30), min_size=1, max_size=10), sep=st.sampled_from([",", ", ", " ,", ",,", " , "]))
def test_valid_block_lists_parse_exactly(blocks: list[int], sep: str) -> None:
    assert parse_blocks(sep.join(map(str, blocks))) == sorted(set(blocks))


@QUICK
@given(blocks=st.lists(st.integers(0, 99), max_size=5), negative=st.integers(max_value=-1), flag=st.sampled_from(["--remove", "--keep"]))
def test_negative_block_is_one_error_naming_the_flag(blocks: list[int], negative: int, flag: str) -> None:
    with pytest.raises(LayershearError, match=f"^{flag} takes 0-based block indices, none negative") as info:
        parse_blocks(",".join(map(str, [*blocks, negative])), flag)
    one_line_error(info.value, LayershearError, flag)
