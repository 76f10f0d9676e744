"""Names of the block-importance metrics (kept free of heavy imports for the CLI)."""

from __future__ import annotations

BASELINE_METRICS: tuple[str, ...] = ("cosine", "angular", "perplexity", "taylor")
"""ShortGPT Block Influence, Gromov et al.'s angular distance, SLEB / Shortened-LLaMA perplexity,
Shortened-LLaMA Taylor+ (see :mod:`layershear.scoring.baselines`)."""
METRICS: tuple[str, ...] = ("accuracy", *BASELINE_METRICS)
"""``accuracy`` is the paper's AccBasedRelevance; the rest are the baselines."""
ITERATIVE_BY_DEFAULT: frozenset[str] = frozenset({"accuracy", "perplexity"})
"""Metrics rescored after every removal unless ``--one-shot``; the others rank once."""
METRIC_TITLES: dict[str, str] = {
    "accuracy": "accuracy-based relevance (Acc-based relevance, arXiv 2605.14075)",
    "cosine": "cosine similarity of a block's input and output (ShortGPT's Block Influence, arXiv 2403.03853)",
    "angular": "angular distance between a block's input and output (Gromov et al., arXiv 2403.17887)",
    "perplexity": "perplexity of the model without the block (SLEB, arXiv 2402.09025)",
    "taylor": "first-order Taylor importance of the block's weights (Shortened LLaMA, arXiv 2402.02834)",
}
"""What each metric measures, with its source, for model cards and help texts."""
