"""layershear.json: the resolved settings, every step's scores and the removed blocks of one run."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from collections.abc import Sequence
from typing import Any

from layershear import __version__
from layershear.data.calibration import CalibrationSet
from layershear.scoring.accuracy import ModelAccuracy
from layershear.scoring.evaluation import TaskResult
from layershear.scoring.relevance import BlockScore
from layershear.search.result import SearchResult


def accuracy_dict(acc: ModelAccuracy) -> dict[str, Any]:
    """One model's accuracy (per-request log-likelihoods and per-document correctness stay out of the JSON)."""
    return {"removed": sorted(acc.removed), "accuracy": acc.accuracy, "random": acc.random, "gold_prob": acc.gold_prob,
            "accuracy_by_task": acc.accuracy_by_task, "random_by_task": acc.random_by_task}


def block_scores(scores: Sequence[BlockScore]) -> list[dict[str, Any]]:
    """JSON rows for a relevance table (one per block)."""
    return [dataclasses.asdict(s) for s in scores]


def calibration_dict(calib: CalibrationSet, *, measures: dict[str, str], num_tokens: int) -> dict[str, Any]:
    """The calibration set: recipe, seed, documents drawn per task, the measure (acc / acc_norm) per task."""
    return {"recipe": calib.recipe, "seed": calib.seed, "num_items": len(calib.items), "measures": measures,
            "num_tokens": num_tokens, "notes": calib.notes,
            "draws": [dataclasses.asdict(d) for d in calib.draws]}


def search_dict(result: SearchResult) -> dict[str, Any]:
    """The search: strategy, removed and kept blocks, every step's candidates (with the documents each
    was scored on: fewer than the calibration set's when racing dropped it), the evolutionary moves,
    blocks completed after the budget ran out (what it cost: :func:`search_cost_dict`)."""

    return {
        "width": result.width,
        "strategy": result.strategy,
        "num_blocks": result.num_blocks,
        "removed": list(result.removed),
        "kept": list(result.kept),
        "full": accuracy_dict(result.full),
        "final": accuracy_dict(result.final),
        "steps": [{"step": s.step, "removed_block": s.chosen.block_idx, "relevance": s.chosen.relevance,
                   "accuracy": s.chosen.accuracy, "accuracy_by_task": s.chosen.accuracy_by_task,
                   "relevance_by_task": s.chosen.relevance_by_task,
                   "candidates": [{"block_idx": c.block_idx, "relevance": c.relevance, "accuracy": c.accuracy,
                                   "exact": c.exact, "sequences": c.sequences, "documents": c.documents}
                                  for c in s.candidates]}
                  for s in result.steps],
        "refinements": [{"generation": m.generation, "put_back": list(m.put_back), "removed": list(m.removed),
                         "accuracy_before": m.before.accuracy, "accuracy_after": m.after.accuracy}
                        for m in result.refinements],
        "completed": list(result.completed),
        "notes": list(result.notes),
    }


def search_cost_dict(result: SearchResult) -> dict[str, Any] | None:
    """What the search cost this run (``cost.search`` of ``layershear.json``): evaluations,
    block-tokens, documents, expansions, generations; wall time is the record's ``cost.seconds``."""
    if result.cost is None:
        return None
    return {k: v for k, v in dataclasses.asdict(result.cost).items() if k != "seconds"}


def eval_dict(results: Sequence[TaskResult]) -> list[dict[str, Any]]:
    """Held-out results, one row per task."""
    return [dataclasses.asdict(r) for r in results]


def run_record(*, command: str, settings: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """The whole record: version, time, command line, resolved settings, then the given sections."""
    return {"layershear_version": __version__, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command, "settings": settings, **sections}


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(record: dict[str, Any]) -> str:
    """Strict JSON (NaN/inf, e.g. the stderr of one document, become null)."""
    return json.dumps(_finite(record), indent=2, allow_nan=False) + "\n"
