"""layershear.json: the resolved settings, every step's scores and the dropped blocks of one run."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from collections.abc import Sequence
from typing import Any

from layershear import __version__
from layershear.data.calibration import CalibrationSet
from layershear.scoring.evaluation import TaskResult
from layershear.scoring.relevance import BlockScore, Evaluation
from layershear.search.result import SearchResult


def _evaluation(ev: Evaluation) -> dict[str, Any]:  # per-request log-likelihoods stay out of the JSON
    return {"drop": sorted(ev.drop), "accuracy": ev.accuracy, "random": ev.random, "gold_prob": ev.gold_prob,
            "accuracy_by_task": ev.accuracy_by_task, "random_by_task": ev.random_by_task}


def block_scores(scores: Sequence[BlockScore]) -> list[dict[str, Any]]:
    """JSON rows for a relevance table (one per block)."""
    return [dataclasses.asdict(s) for s in scores]


def calibration_dict(calib: CalibrationSet, *, metric: str, num_tokens: int) -> dict[str, Any]:
    return {"recipe": calib.recipe, "seed": calib.seed, "num_items": len(calib.items), "metric": metric,
            "num_tokens": num_tokens, "notes": calib.notes,
            "draws": [dataclasses.asdict(d) for d in calib.draws]}


def search_dict(result: SearchResult) -> dict[str, Any]:
    return {
        "beam_width": result.beam_width,
        "strategy": "greedy" if result.beam_width == 1 else f"beam({result.beam_width})",
        "num_blocks": result.num_blocks,
        "removed": list(result.removed),
        "kept": [b for b in range(result.num_blocks) if b not in result.drop],
        "full": _evaluation(result.full),
        "final": _evaluation(result.final),
        "steps": [{"step": s.step, "removed_block": s.chosen.block_idx, "relevance": s.chosen.relevance,
                   "accuracy": s.chosen.accuracy, "accuracy_by_task": s.chosen.accuracy_by_task,
                   "relevance_by_task": s.chosen.relevance_by_task,
                   "candidates": [{"block_idx": c.block_idx, "relevance": c.relevance, "accuracy": c.accuracy,
                                   "exact": c.exact, "sequences": c.sequences}
                                  for c in s.candidates]}
                  for s in result.steps],
    }


def eval_dict(results: Sequence[TaskResult]) -> list[dict[str, Any]]:
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
