"""Search budgets (``--search-budget``) and what a search has spent, shared by every search.

A budget caps the model evaluations a search makes (``400``, ``400evals``) or the block-tokens its
forwards compute (``2e9tokens``: padded tokens x decoder blocks run, the engine's work unit, which
cached block inputs and step reuse reduce). Every search checks it before each expansion or
generation, so it overshoots by at most one expansion (the children of one model) or one generation.
A search that runs out before its removal set is complete finishes it from the last step's
relevances (the least relevant remaining blocks, without rescoring) and scores that set once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from layershear.errors import LayershearError


@dataclass(frozen=True)
class Spent:
    """Evaluations (distinct models scored) and block-tokens computed so far."""

    evaluations: int = 0
    block_tokens: int = 0


#: spent() -> what the scorer has done so far (counted from the start of the scorer's life)
SpentFn = Callable[[], Spent]


@dataclass(frozen=True)
class SearchBudget:
    """At most ``evaluations`` model evaluations and/or ``block_tokens`` block-tokens (None = no cap),
    counted from ``start`` (what was spent when the search began)."""

    evaluations: int | None = None
    block_tokens: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.evaluations is None and self.block_tokens is None

    def exhausted(self, spent: Spent, start: Spent = Spent()) -> bool:
        """Whether ``spent - start`` reached a cap."""
        return ((self.evaluations is not None and spent.evaluations - start.evaluations >= self.evaluations)
                or (self.block_tokens is not None and spent.block_tokens - start.block_tokens >= self.block_tokens))

    def describe(self) -> str:
        parts = ([f"{self.evaluations} evaluations"] if self.evaluations is not None else []) + \
                ([f"{self.block_tokens:.3g} block-tokens"] if self.block_tokens is not None else [])
        return " or ".join(parts) or "none"


#: no cap (the default of every search)
NO_BUDGET = SearchBudget()

_BUDGET = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*(evals?|evaluations?|tokens?|block-tokens?)?\s*$", re.I)


def parse_budget(text: str | None) -> SearchBudget:
    """``--search-budget``: ``400`` or ``400evals`` (model evaluations), ``2e9tokens`` (block-tokens);
    several separated by commas (the first cap reached stops the search). None or "" = no budget.

    Raises:
        LayershearError: anything else, or a cap below 1.
    """
    if not text:
        return SearchBudget()
    evaluations = tokens = None
    for part in text.split(","):
        m = _BUDGET.match(part)
        value = float(m.group(1)) if m else 0.0
        if not m or value < 1 or value != int(value):
            raise LayershearError(f"--search-budget {text!r}: give a whole number of evaluations (e.g. 400) or "
                                  "block-tokens (e.g. 2e9tokens), comma-separated for both")
        if (m.group(2) or "evals").lower().startswith("eval"):
            evaluations = int(value)
        else:
            tokens = int(value)
    return SearchBudget(evaluations, tokens)


__all__ = ["NO_BUDGET", "SearchBudget", "Spent", "SpentFn", "parse_budget"]
