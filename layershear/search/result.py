"""Search results: the removal order, with every candidate's score at every step."""

from __future__ import annotations

from dataclasses import dataclass

from layershear.scoring.relevance import BlockScore, Evaluation


@dataclass(frozen=True)
class SearchStep:
    """One removal: ``chosen`` is dropped from the model that already lacks the earlier steps' blocks.

    ``candidates`` holds the relevance of every block that was still present, in block order;
    ``before``/``after`` are the calibration evaluations of the model before and after the removal.
    """

    step: int
    chosen: BlockScore
    candidates: tuple[BlockScore, ...]
    before: Evaluation
    after: Evaluation


@dataclass(frozen=True)
class SearchResult:
    """Blocks removed, in removal order (original indices), with the per-step tables."""

    num_blocks: int
    removed: tuple[int, ...]
    steps: tuple[SearchStep, ...]
    full: Evaluation
    beam_width: int

    @property
    def drop(self) -> frozenset[int]:
        return frozenset(self.removed)

    @property
    def final(self) -> Evaluation:
        return self.steps[-1].after if self.steps else self.full
