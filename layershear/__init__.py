"""layershear: remove whole decoder blocks from LLMs by accuracy-based relevance, export an HF checkpoint.

Method: "Rethinking Layer Relevance in Large Language Models Beyond Cosine Similarity" (arXiv 2605.14075).
The public names below are imported on first use, so ``import layershear`` (and the CLI's ``--help``)
loads neither torch nor transformers.

Example:
    >>> import layershear
    >>> run = layershear.prune_model("HuggingFaceTB/SmolLM2-135M", calib="mix10", ratio=0.25)
    >>> run.save_pretrained("smollm2-pruned")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "prune_model": "layershear.pipeline", "PruneRun": "layershear.pipeline", "PruneEvent": "layershear.pipeline",
    "DataSource": "layershear.inputs", "calibration_set": "layershear.inputs", "eval_documents": "layershear.inputs",
    "Scorer": "layershear.scoring.scorer", "SearchPlan": "layershear.scoring.scorer",
    "ModelAccuracy": "layershear.scoring.accuracy", "BlockScore": "layershear.scoring.relevance",
    "RaceSettings": "layershear.scoring.racing", "evaluate_suite": "layershear.scoring.evaluation",
    "GreedyPruner": "layershear.search.greedy", "SearchResult": "layershear.search.result",
    "num_to_remove": "layershear.search.count",
    "Exporter": "layershear.export.exporter",
    "LoglikelihoodEngine": "layershear.engine.loglikelihood", "loglikelihood": "layershear.engine.loglikelihood",
    "Request": "layershear.engine.requests", "EngineConfig": "layershear.engine.config",
    "load_model": "layershear.model.loading", "remove_blocks": "layershear.model.surgery",
    "streamed_model": "layershear.model.streaming", "StreamedEngine": "layershear.engine.streamed",
    **{name: "layershear.errors" for name in ("LayershearError", "RecipeError", "BenchmarkError",
                                               "UnsupportedModelError", "ScoringError", "ExportError", "HubError")},
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'layershear' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
