"""GreedyPruner: the paper's iterative removal of the least relevant block, or a search beyond greedy
(beam, A*-style best-first, evolutionary refinement) over the same objective."""

from __future__ import annotations

import time
from dataclasses import replace

from layershear.errors import LayershearError
from layershear.scoring.scorer import Scorer, SearchPlan
from layershear.search.astar import ASTAR, AStarSettings, astar_search
from layershear.search.beam import StepFn, beam_plan, beam_search
from layershear.search.budget import NO_BUDGET, SearchBudget
from layershear.search.evolve import EVOLVE, EvolveSettings, GenerationFn, evolve
from layershear.search.journal import SearchJournal
from layershear.search.objective import Objective
from layershear.search.result import SearchCost, SearchResult

#: what a search strategy is called (``search=``, ``--search``)
SEARCHES = ("greedy", "beam", "astar", "evolve")


class GreedyPruner:
    """Iteratively remove the least relevant decoder block (AccBasedRelevance), rescoring after each
    removal; or search further over the same objective (calibration accuracy of the pruned model).

    Args:
        scorer: scores the calibration accuracy of any set of removed blocks.
        search: ``greedy`` (the paper), ``beam`` (``beam_width`` partial sets per depth),
            ``astar`` (best-first over partial sets, :mod:`layershear.search.astar`) or ``evolve``
            (greedy, then swap mutations with staged selection, :mod:`layershear.search.evolve`; the
            scorer must be built with ``slices=evolve.slices``).
        beam_width: 1 = greedy; > 1 with ``search="beam"``.
        budget: evaluations / block-tokens for the whole search (:mod:`layershear.search.budget`).
        astar, evolve: settings of those searches.
        on_step: called after each depth / expansion, see :data:`layershear.search.beam.StepFn`.
        on_generation: called after each evolutionary generation.
        journal: record every exactly scored model and step, and replay those an interrupted run
            recorded (:class:`layershear.search.journal.SearchJournal`); None = no journal.

    Raises:
        LayershearError: unknown search, or a beam width that does not fit it.

    Example:
        >>> result = GreedyPruner(scorer).prune(num_remove=8)
        >>> result.removed        # original block indices, in removal order
    """

    def __init__(self, scorer: Scorer, *, search: str | None = None, beam_width: int = 1,
                 budget: SearchBudget = NO_BUDGET, astar: AStarSettings = ASTAR,
                 evolve: EvolveSettings = EVOLVE, on_step: StepFn | None = None,
                 on_generation: GenerationFn | None = None, journal: SearchJournal | None = None) -> None:
        search = search or ("greedy" if beam_width == 1 else "beam")
        if search not in SEARCHES:
            raise LayershearError(f"Unknown search {search!r}; choose one of: {', '.join(SEARCHES)}")
        if beam_width < 1 or (search != "beam" and beam_width != 1):
            raise LayershearError(f"beam width {beam_width} applies to search='beam' only (greedy has width 1)")
        self.scorer = scorer
        self.search = search
        self.beam_width = beam_width
        self.budget = budget
        self.astar = astar
        self.evolve = evolve
        self.on_step = on_step
        self.on_generation = on_generation
        self.journal = journal

    def plan(self, num_remove: int) -> SearchPlan:
        """What the search will ask of the scorer (:class:`layershear.scoring.scorer.SearchPlan`); for
        A*-style and evolutionary search the greedy plan (their cost depends on what they find)."""
        return beam_plan(self.scorer.num_blocks, num_remove, self.beam_width)

    def prune(self, num_remove: int) -> SearchResult:
        """Run the search; see :func:`layershear.search.beam.beam_search`,
        :func:`layershear.search.astar.astar_search` and :func:`layershear.search.evolve.evolve`
        for errors raised.

        Returns:
            The :class:`SearchResult`, its ``cost`` filled in (evaluations, block-tokens, documents,
            seconds spent by this search).
        """
        self.scorer.expect(self.plan(num_remove))
        objective = Objective.of(self.scorer, self.journal)
        on_step = self.journal.on_step(self.on_step) if self.journal is not None else self.on_step
        started, origin = time.perf_counter(), objective.spent()
        documents = self.scorer.documents_scored
        if self.search == "astar":
            result = astar_search(objective, num_remove=num_remove, budget=self.budget, settings=self.astar,
                                  on_step=on_step)
        else:
            result = beam_search(objective.accuracy, num_blocks=self.scorer.num_blocks, num_remove=num_remove,
                                 width=self.beam_width, on_step=on_step, children=objective.children,
                                 budget=self.budget, spent=objective.spent)
            if self.search == "evolve":
                result = evolve(objective, result, budget=self.budget, settings=self.evolve,
                                on_generation=self.on_generation, budget_start=origin)
        spent = objective.spent()
        base = result.cost or SearchCost(0, 0, 0, 0.0)
        return replace(result, cost=replace(base, evaluations=spent.evaluations - origin.evaluations,
                                            block_tokens=spent.block_tokens - origin.block_tokens,
                                            documents=self.scorer.documents_scored - documents,
                                            seconds=round(time.perf_counter() - started, 3)))


__all__ = ["SEARCHES", "GreedyPruner"]
