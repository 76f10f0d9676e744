"""Names of the block-importance metrics (kept free of heavy imports for the CLI)."""

from __future__ import annotations

BASELINE_METRICS: tuple[str, ...] = ("cosine", "angular", "perplexity", "taylor")
"""ShortGPT Block Influence, Gromov et al.'s angular distance, SLEB / Shortened-LLaMA perplexity,
Shortened-LLaMA Taylor+ (see :mod:`layershear.scoring.baselines`)."""
METRICS: tuple[str, ...] = ("accuracy", *BASELINE_METRICS)
"""``accuracy`` is the paper's AccBasedRelevance; the rest are the baselines."""
ITERATIVE_BY_DEFAULT: frozenset[str] = frozenset({"accuracy", "perplexity"})
"""Metrics rescored after every removal unless ``--one-shot``; the others rank once."""
