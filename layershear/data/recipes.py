"""Recipes (data, not code): calibration mixes and evaluation suites, from recipes/*.yaml or inline.

A calibration recipe names, per task, the split to draw from and how much (a fraction of the
split, or a count), plus the split to use instead where the local copy lacks it. An eval suite
names tasks, the split scored (lm-eval's by default) and an optional per-task limit.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from layershear.data.benchmarks import TASKS, get_task
from layershear.errors import BenchmarkError, RecipeError

#: Where a task's training split is missing from the local copies, calibration draws from this
#: split instead (ARC: validation, disjoint from the test split lm-eval scores; HellaSwag, PIQA,
#: WinoGrande: a seeded part of validation, which evaluation then excludes).
LOCAL_FALLBACK_SPLIT = {"arc_easy": "validation", "arc_challenge": "validation", "hellaswag": "validation",
                        "piqa": "validation", "winogrande": "validation", "mmlu": "validation"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibTask(_Strict):
    """One task of a calibration mix: ``fraction`` of ``split`` (seeded sample; None = the task's
    training split, ``TaskSpec.train_split``: ``validation`` for MMLU and C4, ``train`` elsewhere) or
    ``count`` docs, with ``num_fewshot`` examples each (None = the task's lm-eval default)."""

    task: str
    fraction: float | None = None
    count: int | None = None
    split: str | None = None          # None: the task's calibration split (TaskSpec.train_split)
    fallback_split: str | None = None
    note: str | None = None
    num_fewshot: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> CalibTask:
        if self.split is None and self.task in TASKS:
            object.__setattr__(self, "split", TASKS[self.task].train_split)
        if (self.fraction is None) == (self.count is None):
            raise ValueError(f"{self.task}: give exactly one of fraction or count")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"{self.task}: fraction must be in (0, 1], got {self.fraction}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"{self.task}: count must be >= 1, got {self.count}")
        return self


class CalibrationRecipe(_Strict):
    """A calibration mix D (paper: mix10 = 10% of the training split of eight benchmarks)."""

    kind: Literal["calibration"] = "calibration"
    name: str
    description: str = ""
    seed: int = 1234
    tasks: tuple[CalibTask, ...]

    @model_validator(mode="after")
    def _unique(self) -> CalibrationRecipe:
        _check_unique([t.task for t in self.tasks])
        return self


def _check_unique(tasks: list[str]) -> None:
    if not tasks:
        raise ValueError("no tasks; list at least one under tasks:")
    dupes = sorted({t for t in tasks if tasks.count(t) > 1})
    if dupes:
        raise ValueError(f"task(s) listed twice: {', '.join(dupes)}; give each task once")


class EvalTask(_Strict):
    """One task of an eval suite; ``split`` None = lm-eval's scored split; ``limit`` = first N docs;
    ``num_fewshot`` None = the task's lm-eval default (0, GSM8K 5)."""

    task: str
    split: str | None = None
    limit: int | None = Field(default=None, ge=1)
    num_fewshot: int | None = Field(default=None, ge=0)


class EvalSuite(_Strict):
    kind: Literal["eval"] = "eval"
    name: str
    description: str = ""
    tasks: tuple[EvalTask, ...]

    @model_validator(mode="after")
    def _unique(self) -> EvalSuite:
        _check_unique([t.task for t in self.tasks])
        return self


def recipe_dirs() -> list[Path]:
    """Folders searched for ``NAME.yaml``: $LAYERSHEAR_RECIPES, ./recipes, the project's recipes/."""
    dirs = [Path(os.environ["LAYERSHEAR_RECIPES"])] if os.environ.get("LAYERSHEAR_RECIPES") else []
    return dirs + [Path.cwd() / "recipes", Path(__file__).resolve().parents[2] / "recipes"]


def available_recipes(kind: str) -> list[str]:
    names = set()
    for d in recipe_dirs():
        for p in d.glob("*.yaml") if d.is_dir() else ():
            if _read_yaml(p).get("kind") == kind:
                names.add(p.stem)
    return sorted(names)


#: The characters :meth:`str.splitlines` breaks at, escaped, so that an error message stays one line.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def _one_line(text: object) -> str:
    """``text`` with its line breaks escaped (task names, YAML keys and paths are the user's)."""
    return str(text).translate(_LINE_BREAKS)


def _is_file(path: Path) -> bool:
    """:meth:`Path.is_file`, False where the OS refuses the name (too long, say) instead of raising."""
    try:
        return path.is_file()
    except OSError:
        return False


def _yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{e.context + ': ' if e.context else ''}{e.problem}{where}"
    return str(e)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(_one_line(f"Cannot read recipe {path}: {_yaml_problem(e)}; fix the YAML syntax")) from e
    except RecursionError as e:
        raise RecipeError(_one_line(f"Cannot read recipe {path}: it is nested too deeply; a recipe is a flat mapping")) from e
    except (OSError, ValueError) as e:      # UnicodeDecodeError, an impossible date (2001-02-30)
        raise RecipeError(_one_line(f"Cannot read recipe {path}: {e}")) from e
    if not isinstance(data, dict):
        raise RecipeError(_one_line(f"Recipe {path} must be a YAML mapping (kind, name, tasks, ...), not {type(data).__name__}"))
    return data


def _parse_inline(spec: str, kind: str) -> dict:
    tasks = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        task, _, amount = part.partition(":")
        entry: dict = {"task": task.strip()}
        if amount:
            if kind == "eval":
                entry["limit"] = _number(amount, part, kind, integer=True)
            elif re.fullmatch(r"\d+", amount.strip()):
                entry["count"] = _number(amount, part, kind, integer=True)
            else:
                entry["fraction"] = _number(amount, part, kind, integer=False)
        elif kind == "calibration":
            raise RecipeError(f"Inline calibration entry {part!r} needs an amount: task:fraction (0.1) or task:count (50)")
        tasks.append(entry)
    if not tasks:
        example = "arc_easy:0.1,piqa:50" if kind == "calibration" else "arc_easy,piqa:200"
        raise RecipeError(f"{kind.capitalize()} spec {spec!r} names no task; give a recipe name, a YAML path or a list like {example}")
    return {"kind": kind, "name": spec, "tasks": tasks}


def _number(text: str, part: str, kind: str, *, integer: bool) -> float:
    try:
        return int(text) if integer else float(text)
    except ValueError as e:     # also an int of more than sys.get_int_max_str_digits() digits
        fix = "task:0.1 (fraction) or task:50 (count)" if kind == "calibration" else "task:200 (first 200 docs) or just task"
        raise RecipeError(f"Bad amount in {part!r}; write {fix}") from e


def _resolve(spec: str, kind: str) -> tuple[dict, str]:
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")) or _is_file(path):
        if not _is_file(path):
            raise RecipeError(f"Recipe file {spec!r} does not exist")
        return _read_yaml(path), str(path)
    if re.fullmatch(r"[\w.-]+", spec):
        for d in recipe_dirs():
            if _is_file(d / f"{spec}.yaml"):
                return _read_yaml(d / f"{spec}.yaml"), str(d / f"{spec}.yaml")
        known = available_recipes(kind)
        if get_task_or_none(spec) is None:
            hint = difflib.get_close_matches(spec, known + sorted(TASKS), n=3)
            did = f" Did you mean: {', '.join(hint)}?" if hint else ""
            example = "arc_easy:0.1,piqa:50" if kind == "calibration" else "arc_easy,piqa:200"
            raise RecipeError(f"Unknown {kind} recipe or task {spec!r}.{did} Recipes: {', '.join(known)}; "
                              f"tasks: {', '.join(sorted(TASKS))}; or give a path, or an inline list like {example}")
    return _parse_inline(spec, kind), "inline"


def get_task_or_none(name: str):
    try:
        return get_task(name)
    except BenchmarkError:
        return None


def _validate(data: dict, origin: str, model: type[BaseModel]):
    try:
        recipe = model.model_validate(data)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in e.errors())
        raise RecipeError(_one_line(f"Invalid recipe {origin}: {errs}")) from e
    for entry in recipe.tasks:
        try:
            get_task(entry.task)
        except BenchmarkError as e:
            raise RecipeError(_one_line(f"{origin}: {e}")) from e
    return recipe


def load_calibration(spec: str) -> CalibrationRecipe:
    """A calibration recipe from a name (``mix10``), a YAML path, or inline ``task:amount,...``.

    Inline amounts: a decimal (``0.1``) is a fraction of the task's training split, a whole number
    (``50``) a count of documents.

    Raises:
        RecipeError: unknown name or task, malformed file, bad amount.
    """
    data, origin = _resolve(spec, "calibration")
    if data.get("kind", "calibration") != "calibration":
        raise RecipeError(_one_line(f"{origin} is a {data.get('kind')!r} recipe, not a calibration recipe"))
    data.setdefault("name", Path(origin).stem if origin != "inline" else spec)
    return _validate(data, origin, CalibrationRecipe)


def load_eval_suite(spec: str) -> EvalSuite:
    """An eval suite from a name, a YAML path, or inline ``task[:limit],...`` (e.g. ``arc_easy,piqa:200``).

    Raises:
        RecipeError: unknown name or task, malformed file.
    """
    data, origin = _resolve(spec, "eval")
    if data.get("kind", "eval") != "eval":
        raise RecipeError(_one_line(f"{origin} is a {data.get('kind')!r} recipe, not an eval suite"))
    data.setdefault("name", Path(origin).stem if origin != "inline" else spec)
    return _validate(data, origin, EvalSuite)
