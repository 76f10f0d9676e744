"""What a job is given, resolved: the model (Hub id, folder or loaded), the calibration set, the eval documents.

Shared by :func:`layershear.pipeline.prune_model` and the ``score``, ``eval`` and ``analyze``
commands, so that every job reads its inputs the same way and fails on bad input before any
weights are loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from layershear.data.benchmarks import MCItem, find_data_dir
from layershear.data.calibration import CalibrationSet, build_calibration, build_eval
from layershear.data.recipes import CalibrationRecipe, EvalSuite, load_calibration, load_eval_suite
from layershear.errors import LayershearError

#: (task, split) -> document ids used for calibration, which evaluation skips.
Exclusions = Mapping[tuple[str, str], frozenset[int]]


@dataclass(frozen=True)
class DataSource:
    """Where benchmark documents come from and how they are prompted: ``source`` ``auto`` (local
    copies when found, else the Hub), ``local`` or ``hub``; ``data_dir`` the local benchmarks folder
    (default: ``$LAYERSHEAR_DATA`` or ``../shared/data/benchmarks``); ``num_fewshot`` few-shot
    examples for every task that takes them (lm-eval's ``--num_fewshot``; None = each recipe entry's,
    else the task's lm-eval default, see :func:`layershear.data.calibration.num_fewshot_of`)."""

    source: str = "auto"
    data_dir: str | os.PathLike[str] | None = None
    num_fewshot: int | None = None

    @property
    def folder(self) -> Path | None:
        return find_data_dir(self.data_dir)


def calibration_set(calib: str | CalibrationRecipe | CalibrationSet, data: DataSource | None = None) -> CalibrationSet:
    """The calibration set D from a recipe name (``mix10``), a YAML path, inline ``task:amount,...``,
    a loaded recipe, or a set already drawn (returned as is).

    Raises:
        RecipeError: unknown recipe or task, malformed file. BenchmarkError: unreadable data.
    """
    if isinstance(calib, CalibrationSet):
        return calib
    data = data or DataSource()
    recipe = calib if isinstance(calib, CalibrationRecipe) else load_calibration(calib)
    return build_calibration(recipe, source=data.source, data_dir=data.folder, num_fewshot=data.num_fewshot)


def describe_calibration(calib: CalibrationSet) -> str:
    """One line: ``calibration set 'demo': 112 docs from arc_easy/validation (32), ...``."""
    return (f"calibration set {calib.recipe!r}: {len(calib.items)} docs from "
            + ", ".join(f"{d.task}/{d.split} ({len(d.doc_ids)})" for d in calib.draws))


def eval_documents(suite: str | EvalSuite, data: DataSource | None = None,
                   exclude: Exclusions | None = None) -> tuple[str, dict[str, list[MCItem]]]:
    """``(suite name, task -> held-out documents)`` for an eval suite name, YAML path, inline
    ``task[:limit],...`` or loaded suite, skipping the documents in ``exclude``.

    Raises:
        RecipeError: unknown suite or task, or no document left after the exclusions.
    """
    suite = suite if isinstance(suite, EvalSuite) else load_eval_suite(suite)
    data = data or DataSource()
    return suite.name, build_eval(suite, exclude=exclude, source=data.source, data_dir=data.folder,
                                  num_fewshot=data.num_fewshot)


def calibration_exclusions(files: Iterable[str | os.PathLike[str]]) -> dict[tuple[str, str], frozenset[int]]:
    """The calibration documents listed in ``layershear.json`` files (their ``calibration.draws``).

    Raises:
        LayershearError: a file is unreadable or not a layershear.json.
    """
    out: dict[tuple[str, str], set[int]] = {}
    for f in files:
        try:
            draws = json.loads(Path(f).read_text()).get("calibration", {}).get("draws", [])
            for d in draws:
                out.setdefault((d["task"], d["split"]), set()).update(int(i) for i in d["doc_ids"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise LayershearError(f"Cannot read calibration docs from {f} (expected a layershear.json): {e!r}") from e
    return {k: frozenset(v) for k, v in out.items()}


def model_and_tokenizer(model, tokenizer=None, *, dtype: str = "auto", device: str = "auto",
                        revision: str | None = None, trust_remote_code: bool = False):
    """``(model, tokenizer, source)``: a Hub id or local folder is loaded
    (:func:`layershear.model.loading.load_model`); a loaded ``PreTrainedModel`` is used as is (put in
    eval mode), its tokenizer loaded from ``model.name_or_path`` unless given. ``source`` is the checkpoint an export
    streams from (the id or folder; ``model.name_or_path`` for a loaded model). A loaded model's weights
    are checked to be finite (:func:`layershear.model.checkpoint.check_finite`); ``trust_remote_code``
    is passed to every transformers loader (False: a checkpoint with ``auto_map`` is refused).

    Raises:
        UnsupportedModelError: unsupported architecture, missing folder, failed download.
        CheckpointError: a corrupt, incomplete, pickle-only or code-running checkpoint, NaN/Inf weights.
        LayershearError: a loaded model without ``name_or_path``, or a bad dtype/device name.
    """
    from layershear.model.arch import block_layout

    if isinstance(model, str | os.PathLike):
        from layershear.model.loading import load_model

        loaded, tok = load_model(os.fspath(model), dtype=dtype, device=device, revision=revision,
                                 trust_remote_code=trust_remote_code, load_tokenizer=tokenizer is None)
        return loaded, tokenizer or tok, os.fspath(model)
    from layershear.model.checkpoint import check_finite

    block_layout(model)
    source = getattr(model, "name_or_path", "") or ""
    if not source:
        raise LayershearError("The model has no name_or_path, so its checkpoint is unknown; save it with "
                              "model.save_pretrained(DIR) and pass DIR")
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    check_finite(model, source)
    return model.eval(), tokenizer, source
