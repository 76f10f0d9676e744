"""Evolutionary refinement of a removal set (EvoPress-style, arXiv 2410.14649): (1 + lambda) evolution
with swap mutations and staged selection.

It starts from greedy's set S (the paper's search). Each generation draws ``offspring`` distinct
neighbours of the current best set: a mutation swaps ``s`` removed blocks with ``s`` kept ones
(s = 1, or 2 with probability ``double_swap``), so every offspring removes exactly k blocks.
Offspring are scored in stages (:meth:`layershear.scoring.scorer.Scorer.select`): all on a small
slice of the calibration set, only the best few on more, and the last survivor on all of it; with
racing on, an offspring is also dropped as soon as the paired bound shows the current best beats it.
The survivor replaces the current best if it ranks better on the whole calibration set (the same
order greedy uses: higher accuracy, then higher gold-choice probability). The search stops after
``patience`` generations in a row without an improvement, after ``generations`` generations, or when
the budget is spent. Mutations come from ``random.Random(seed)``, so a run is deterministic.

Offspring share the current best set's blocks below the first swapped block, so each one runs from
that block's cached input (:meth:`layershear.engine.loglikelihood.LoglikelihoodEngine.run_for`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from layershear.errors import ScoringError
from layershear.scoring.accuracy import ModelAccuracy
from layershear.search.budget import NO_BUDGET, SearchBudget
from layershear.search.objective import Objective
from layershear.search.result import SearchResult, Swap

#: on_generation(generation, best accuracy, improved)
GenerationFn = Callable[[int, ModelAccuracy, bool], None]


@dataclass(frozen=True)
class EvolveSettings:
    """``offspring``: lambda, neighbours drawn per generation; ``stages``: ``(slices seen, kept)``
    pairs of the staged selection (with 8 slices: all offspring on 1/8 of D, the best 4 on 1/4, the best
    2 on 1/2, the best one on all of D); ``slices``: how many slices D is cut into; ``patience``:
    generations without improvement before stopping; ``generations``: at most this many;
    ``double_swap``: probability that a mutation swaps two pairs of blocks instead of one; ``seed``."""

    offspring: int = 16
    stages: tuple[tuple[int, int], ...] = ((1, 4), (2, 2), (4, 1))
    slices: int = 8
    patience: int = 2
    generations: int = 50
    double_swap: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.offspring < 1 or self.patience < 1 or self.generations < 1 or self.slices < 2:
            raise ScoringError("evolve settings: offspring, patience and generations must be >= 1 and slices >= 2")
        if any(not 0 < n < self.slices or k < 1 for n, k in self.stages):
            raise ScoringError(f"evolve stages {self.stages}: slices seen must be in 1..{self.slices - 1}, kept >= 1")


#: the default settings
EVOLVE = EvolveSettings()


def _mutate(removed: frozenset[int], num_blocks: int, rng: random.Random, double: float) -> frozenset[int]:
    kept = [b for b in range(num_blocks) if b not in removed]
    n = min(2 if rng.random() < double else 1, len(removed), len(kept))
    out = rng.sample(sorted(removed), n)
    back = rng.sample(kept, n)
    return (removed - set(out)) | set(back)


def evolve(objective: Objective, start: SearchResult, *, budget: SearchBudget = NO_BUDGET,
           settings: EvolveSettings = EVOLVE, on_generation: GenerationFn | None = None,
           budget_start=None) -> SearchResult:
    """Refine ``start`` (greedy's result) by swap mutations with staged selection.

    Args:
        objective: needs ``select``, ``anchor`` and ``estimate`` (a Scorer built with ``slices``).
        start: the search result to refine; its steps stay the result's ``steps``.
        budget: evaluations / block-tokens, counted from ``budget_start`` (default: now); checked
            before every generation.
        settings: :class:`EvolveSettings`.
        on_generation: progress callback.

    Returns:
        ``start`` with ``name="evolve"``, the accepted moves in ``refinements``, the final set in
        ``removed`` (sorted) and its exact accuracy in ``end``.

    Raises:
        ScoringError: the objective cannot score arbitrary sets in stages.
    """
    if objective.select is None or objective.estimate is None:
        raise ScoringError("the evolutionary search needs a scorer that scores sets in stages (Scorer.select)")
    origin = budget_start if budget_start is not None else objective.spent()
    rng = random.Random(settings.seed)
    best = start.final
    moves: list[Swap] = []
    stale = generation = 0
    notes: list[str] = []
    while stale < settings.patience and generation < settings.generations:
        if budget.exhausted(objective.spent(), origin):
            notes.append(f"search budget ({budget.describe()}) spent after {generation} generations")
            break
        generation += 1
        if objective.anchor is not None:
            objective.anchor(best.removed)
        offspring: list[frozenset[int]] = []
        for _ in range(50 * settings.offspring):           # neighbours not scored before
            if len(offspring) == settings.offspring:
                break
            child = _mutate(best.removed, objective.num_blocks, rng, settings.double_swap)
            if child != best.removed and child not in offspring and objective.estimate(child) is None:
                offspring.append(child)
        if not offspring:
            notes.append(f"every neighbour drawn in generation {generation} was scored before")
            break
        results = objective.select(offspring, stages=settings.stages, reference=best)
        survivors = [acc for acc in results.values() if acc.exact]
        top = min(survivors, key=lambda a: a.rank_key) if survivors else None
        improved = top is not None and top.rank_key < best.rank_key
        if improved:
            top = objective.accuracy(top.removed)           # memoised; recorded by a journal
            moves.append(Swap(generation, tuple(sorted(best.removed - top.removed)),
                              tuple(sorted(top.removed - best.removed)), best, top))
            best, stale = top, 0
        else:
            stale += 1
        if on_generation is not None:
            on_generation(generation, best, improved)
    if stale >= settings.patience:
        notes.append(f"stopped after {settings.patience} generations without an improving offspring")
    cost = start.cost
    if cost is not None:
        cost = replace(cost, generations=generation)
    return replace(start, name="evolve", removed=tuple(sorted(best.removed)) if moves else start.removed,
                   refinements=tuple(moves), end=best if moves else start.end, cost=cost,
                   notes=start.notes + tuple(notes))


__all__ = ["EVOLVE", "EvolveSettings", "GenerationFn", "evolve"]
