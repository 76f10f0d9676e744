"""layershear: remove whole decoder blocks from LLMs by accuracy-based relevance, export an HF checkpoint.

Method: "Rethinking Layer Relevance in Large Language Models Beyond Cosine Similarity" (arXiv 2605.14075).
"""

from __future__ import annotations

__version__ = "0.1.0"

from layershear.data.calibration import build_calibration, build_eval
from layershear.data.recipes import load_calibration, load_eval_suite
from layershear.export.exporter import Exporter
from layershear.scoring.relevance import BlockScore, Evaluation
from layershear.scoring.scorer import Scorer
from layershear.search import GreedyPruner, SearchResult, num_blocks_to_drop

__all__ = ["BlockScore", "Evaluation", "Exporter", "GreedyPruner", "Scorer", "SearchResult", "__version__",
           "build_calibration", "build_eval", "load_calibration", "load_eval_suite", "num_blocks_to_drop"]
