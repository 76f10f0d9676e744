"""GreedyPruner: the paper's iterative removal of the least relevant block (optionally beam search)."""

from __future__ import annotations

from layershear.scoring.scorer import Scorer, SearchPlan
from layershear.search.beam import StepFn, beam_plan, beam_search
from layershear.search.journal import SearchJournal
from layershear.search.result import SearchResult


class GreedyPruner:
    """Iteratively remove the least relevant decoder block (AccBasedRelevance), rescoring after each removal.

    Args:
        scorer: scores the calibration accuracy of any set of removed blocks.
        beam_width: 1 = the paper's greedy search; > 1 keeps that many partial removal sets per depth
            (backtracking beyond greedy), ranked by calibration accuracy of the pruned model.
        on_step: called after each depth, see :data:`layershear.search.beam.StepFn`.
        journal: record every scored model and step, and replay those an interrupted run recorded
            (:class:`layershear.search.journal.SearchJournal`); None = no journal.

    Example:
        >>> result = GreedyPruner(scorer).prune(num_remove=8)
        >>> result.removed        # original block indices, in removal order
    """

    def __init__(self, scorer: Scorer, *, beam_width: int = 1, on_step: StepFn | None = None,
                 journal: SearchJournal | None = None) -> None:
        self.scorer = scorer
        self.beam_width = beam_width
        self.on_step = on_step
        self.journal = journal

    def plan(self, num_remove: int) -> SearchPlan:
        """What the search will ask of the scorer (:class:`layershear.scoring.scorer.SearchPlan`)."""
        return beam_plan(self.scorer.num_blocks, num_remove, self.beam_width)

    def prune(self, num_remove: int) -> SearchResult:
        """Run the search; see :func:`layershear.search.beam.beam_search` for errors raised."""
        self.scorer.expect(self.plan(num_remove))
        accuracy, children, on_step = self.scorer.accuracy, self.scorer.children, self.on_step
        if self.journal is not None:
            accuracy, children = self.journal.accuracy(accuracy), self.journal.children(children)
            on_step = self.journal.on_step(on_step)
        return beam_search(accuracy, num_blocks=self.scorer.num_blocks, num_remove=num_remove,
                           width=self.beam_width, on_step=on_step, children=children)
