"""What a search asks of the scorer: the :class:`Objective` every search runs over.

All searches optimise the same objective, the calibration accuracy of the pruned model
(Acc(f_-S, D), ranked by :attr:`layershear.scoring.accuracy.ModelAccuracy.rank_key`), through
these calls. :meth:`Objective.of` builds one from a :class:`layershear.scoring.scorer.Scorer` (and a
journal that records and replays its exact evaluations); tests build one from a synthetic evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from layershear.scoring.accuracy import ModelAccuracy
from layershear.scoring.relevance import BlockScore
from layershear.search.budget import Spent, SpentFn

#: accuracy(removed) -> calibration accuracy of the model without those blocks.
AccuracyFn = Callable[[frozenset[int]], ModelAccuracy]
#: children(removed, blocks) -> {b: accuracy of the model without removed | {b}}; lets a scorer share
#: work between the candidates of one parent (``Scorer.children``).
ChildrenFn = Callable[[frozenset[int], list[int]], dict[int, ModelAccuracy]]
#: select(candidates, stages=..., reference=...) -> {set: accuracy}: staged selection (``Scorer.select``).
SelectFn = Callable[..., dict[frozenset[int], ModelAccuracy]]


@dataclass
class Objective:
    """The calls a search makes: ``accuracy`` and ``children`` (exact, memoised by the scorer),
    ``spent`` (for budgets), and for the evolutionary search ``select`` (staged selection over
    arbitrary sets), ``anchor`` (cache the block inputs of the current best set) and ``estimate``
    (a set already scored, exactly or in part; None = not scored)."""

    num_blocks: int
    accuracy: AccuracyFn
    children: ChildrenFn
    spent: SpentFn = Spent
    select: SelectFn | None = None
    anchor: Callable[[frozenset[int]], None] | None = None
    estimate: Callable[[frozenset[int]], ModelAccuracy | None] | None = None

    @classmethod
    def of(cls, scorer, journal=None) -> Objective:
        """The objective of a :class:`layershear.scoring.scorer.Scorer`; with a
        :class:`layershear.search.journal.SearchJournal` its exact evaluations are recorded and replayed."""
        accuracy, children = scorer.accuracy, scorer.children
        if journal is not None:
            accuracy, children = journal.accuracy(accuracy), journal.children(children)
        stats = getattr(scorer.engine, "stats", None)        # a generative scorer counts no block-tokens
        estimate = getattr(scorer, "estimate", None)
        if journal is not None and estimate is not None:     # a resumed run knows what the journal replays
            scored = estimate
            estimate = lambda removed: scored(removed) or journal.known(removed)
        served = journal.served if journal is not None else ()   # replayed evaluations count as spent

        return cls(num_blocks=scorer.num_blocks, accuracy=accuracy, children=children,
                   spent=lambda: Spent(scorer.evaluations + len(served), getattr(stats, "block_tokens", 0)),
                   select=getattr(scorer, "select", None), anchor=getattr(scorer, "anchor", None),
                   estimate=estimate)


def complete(objective: Objective, removed: Sequence[int], scores: Iterable[BlockScore],
             num_remove: int) -> tuple[tuple[int, ...], ModelAccuracy]:
    """Finish a removal set without scoring more steps (the budget ran out): add the
    ``num_remove - len(removed)`` least relevant of ``scores`` (relevances measured at the deepest
    model scored on this path) that are not removed yet, and score the final set once.

    Returns:
        (the blocks added, least relevant first; the final set's accuracy).
    """
    from layershear.search.beam import rank_key

    need = num_remove - len(removed)
    added = tuple(s.block_idx for s in sorted(scores, key=rank_key) if s.block_idx not in removed)[:need]
    return added, objective.accuracy(frozenset(removed) | set(added))


__all__ = ["AccuracyFn", "ChildrenFn", "Objective", "SelectFn", "complete"]
