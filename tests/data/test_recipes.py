"""Recipes (names, files, inline lists) and the calibration / held-out evaluation draws."""

from __future__ import annotations

import pytest

from layershear.data.benchmarks import find_data_dir
from layershear.data.calibration import build_calibration, build_eval
from layershear.data.recipes import available_recipes, load_calibration, load_eval_suite
from layershear.errors import RecipeError

needs_data = pytest.mark.skipif(find_data_dir() is None, reason="../shared/data/benchmarks not found")
EIGHT = {"arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande", "mmlu"}


def test_mix10_names_the_eight_benchmarks_at_ten_percent():
    recipe = load_calibration("mix10")
    assert {t.task for t in recipe.tasks} == EIGHT
    assert all(t.fraction == 0.1 for t in recipe.tasks)
    assert {t.task: t.fallback_split for t in recipe.tasks}["hellaswag"] == "validation"


def test_shipped_recipes_are_all_valid():
    for name in available_recipes("calibration"):
        load_calibration(name)
    for name in available_recipes("eval"):
        load_eval_suite(name)
    assert {"mix10", "demo", "arc_easy10"} <= set(available_recipes("calibration"))
    assert {"eval-paper", "eval-demo"} <= set(available_recipes("eval"))


def test_inline_lists_take_fractions_and_counts():
    recipe = load_calibration("arc_easy:0.1, piqa:50")
    assert [(t.task, t.fraction, t.count) for t in recipe.tasks] == [("arc_easy", 0.1, None), ("piqa", None, 50)]
    suite = load_eval_suite("arc_easy,piqa:200")
    assert [(t.task, t.limit) for t in suite.tasks] == [("arc_easy", None), ("piqa", 200)]


def test_recipe_file_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("kind: calibration\nseed: 3\ntasks:\n  - {task: boolq, count: 5}\n")
    recipe = load_calibration(str(path))
    assert recipe.name == "mine" and recipe.seed == 3 and recipe.tasks[0].count == 5


@pytest.mark.parametrize(("spec", "match"), [
    ("hellaswg:0.1", r"Unknown task 'hellaswg'.*Did you mean: hellaswag"),
    ("mix1O", r"Unknown calibration recipe or task 'mix1O'.*Did you mean: mix10"),
    ("arc_easy:lots", "Bad amount"),
    ("arc_easy", "needs an amount"),
    ("arc_easy:1.5", "fraction must be in"),
    ("missing.yaml", "does not exist"),
    ("eval-paper", "not a calibration recipe"),
])
def test_bad_calibration_specs_are_one_clear_error(spec, match):
    with pytest.raises(RecipeError, match=match):
        load_calibration(spec)


def test_misspelled_recipe_key_is_an_error(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("kind: calibration\ntasks:\n  - {task: boolq, fraction: 0.1, splt: train}\n")
    with pytest.raises(RecipeError, match=r"tasks\.0\.splt"):
        load_calibration(str(path))


@needs_data
def test_calibration_is_seeded_and_uses_local_fallbacks():
    recipe = load_calibration("boolq:0.01,hellaswag:20,openbookqa:0.01")
    a = build_calibration(recipe, source="local")
    b = build_calibration(recipe, source="local")
    assert [d.doc_ids for d in a.draws] == [d.doc_ids for d in b.draws]
    draws = {d.task: d for d in a.draws}
    assert draws["boolq"].split == "train" and len(draws["boolq"].doc_ids) == round(0.01 * 9427)
    assert draws["openbookqa"].split == "train" and draws["openbookqa"].pool_size == 4957
    assert draws["hellaswag"].split == "validation" and draws["hellaswag"].requested_split == "train"
    assert len(draws["hellaswag"].doc_ids) == 20
    assert any("hellaswag" in n and "evaluation skips" in n for n in a.notes)
    assert len(a.items) == sum(len(d.doc_ids) for d in a.draws)


@needs_data
def test_evaluation_never_sees_calibration_docs():
    calib = build_calibration(load_calibration("piqa:0.5,arc_easy:30"), source="local")
    tasks = build_eval(load_eval_suite("piqa,arc_easy"), exclude=calib.used(), source="local")
    used = calib.used()
    piqa_calib = used[("piqa", "validation")]
    assert len(piqa_calib) == 919
    assert len(tasks["piqa"]) == 1838 - 919
    assert not {d.doc_id for d in tasks["piqa"]} & piqa_calib
    assert len(tasks["arc_easy"]) == 2376      # calibration drew from validation, eval scores test
    limited = build_eval(load_eval_suite("piqa:10"), exclude=used, source="local")
    assert len(limited["piqa"]) == 10 and not {d.doc_id for d in limited["piqa"]} & piqa_calib


@pytest.mark.parametrize(("spec", "match"), [("piqa:0.1,piqa:20", "listed twice: piqa")])
def test_duplicate_calibration_tasks_are_refused(spec, match):
    with pytest.raises(RecipeError, match=match):
        load_calibration(spec)


def test_eval_limit_must_be_positive():
    with pytest.raises(RecipeError, match="greater than or equal to 1"):
        load_eval_suite("piqa:0")


@needs_data
def test_eval_with_nothing_left_after_calibration_is_an_error():
    calib = build_calibration(load_calibration("piqa:1.0"), source="local")
    with pytest.raises(RecipeError, match="no documents left"):
        build_eval(load_eval_suite("piqa"), exclude=calib.used(), source="local")


def test_an_entry_without_split_draws_from_the_tasks_calibration_split():
    from layershear.data.recipes import load_calibration

    recipe = load_calibration("c4:4,mmlu:3,arc_easy:2")
    assert [(t.task, t.split) for t in recipe.tasks] == [("c4", "validation"), ("mmlu", "validation"),
                                                          ("arc_easy", "train")]
