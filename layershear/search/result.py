"""Search results: the removal order, with every candidate's score at every step, and what the search cost."""

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
class Swap:
    """One accepted move of the evolutionary refinement: the blocks ``put_back`` return to the
    model and the blocks ``removed`` leave it; ``before``/``after`` are the calibration accuracies
    of the removal set before and after the move (``after`` exact)."""

    generation: int
    put_back: tuple[int, ...]
    removed: tuple[int, ...]
    before: ModelAccuracy
    after: ModelAccuracy


@dataclass(frozen=True)
class SearchCost:
    """What a search cost: ``evaluations`` = distinct models scored (exactly or on part of the
    calibration set), ``block_tokens`` = padded tokens x decoder blocks run (the engine's work unit,
    :class:`layershear.engine.work.EngineStats`), ``documents`` = calibration documents scored, summed
    over models, ``seconds`` = wall time; ``expansions``: models whose children were scored (A*,
    greedy and beam: one per step and beam entry); ``generations``: evolutionary generations run."""

    evaluations: int
    block_tokens: int
    documents: int
    seconds: float
    expansions: int = 0
    generations: int = 0

    @classmethod
    def counting(cls, expansions: int) -> SearchCost:
        """A cost holding only what a search function counts itself (its expansions);
        :class:`layershear.search.greedy.GreedyPruner` fills in the rest from the scorer."""
        return cls(evaluations=0, block_tokens=0, documents=0, seconds=0.0, expansions=expansions)


@dataclass(frozen=True)
class SearchResult:
    """Blocks removed (original indices), the path that found them, and the cost.

    ``steps`` are the removals along the path (greedy, beam and A*-style search: each with the
    candidates scored at that model; evolve: greedy's steps), ``refinements`` the evolutionary
    moves accepted after them, ``completed`` blocks added without scoring their step, from the
    last step's relevances, because the search budget ran out. ``name`` is the search (``greedy``,
    ``beam``, ``astar``, ``evolve``); ``width`` the beam width; ``end`` the accuracy of the final set
    when it is not the last step's (refined or completed).
    """

    num_blocks: int
    removed: tuple[int, ...]
    steps: tuple[SearchStep, ...]
    full: ModelAccuracy
    width: int = 1
    name: str = "beam"
    refinements: tuple[Swap, ...] = ()
    completed: tuple[int, ...] = ()
    end: ModelAccuracy | None = None
    cost: SearchCost | None = None
    notes: tuple[str, ...] = ()

    @property
    def strategy(self) -> str:
        """``greedy``, ``beam(W)``, ``astar`` or ``evolve``."""
        if self.name == "beam":
            return "greedy" if self.width == 1 else f"beam({self.width})"
        return self.name

    @property
    def kept(self) -> tuple[int, ...]:
        """Original indices of the blocks that stay, in order."""
        return tuple(b for b in range(self.num_blocks) if b not in self.removed)

    @property
    def final(self) -> ModelAccuracy:
        if self.end is not None:
            return self.end
        return self.steps[-1].after if self.steps else self.full
