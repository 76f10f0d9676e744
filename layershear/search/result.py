"""Search results: the removal order, with every candidate's score at every step."""

from __future__ import annotations

from dataclasses import dataclass

from layershear.scoring.accuracy import ModelAccuracy
from layershear.scoring.relevance import BlockScore


@dataclass(frozen=True)
class SearchStep:
    """One removal: ``chosen`` is removed from the model that already lacks the earlier steps' blocks.

    ``candidates`` holds the relevance of every block that was still present, in block order;
    ``before``/``after`` are the calibration accuracies of the model before and after the removal.
    """

    step: int
    chosen: BlockScore
    candidates: tuple[BlockScore, ...]
    before: ModelAccuracy
    after: ModelAccuracy


@dataclass(frozen=True)
class SearchResult:
    """Blocks removed, in removal order (original indices), with the per-step tables.

    ``strategy`` names the search (``greedy`` or ``beam(W)``); ``width`` is its beam width.
    """

    num_blocks: int
    removed: tuple[int, ...]
    steps: tuple[SearchStep, ...]
    full: ModelAccuracy
    width: int = 1

    @property
    def strategy(self) -> str:
        return "greedy" if self.width == 1 else f"beam({self.width})"

    @property
    def kept(self) -> tuple[int, ...]:
        """Original indices of the blocks that stay, in order."""
        return tuple(b for b in range(self.num_blocks) if b not in self.removed)

    @property
    def final(self) -> ModelAccuracy:
        return self.steps[-1].after if self.steps else self.full
