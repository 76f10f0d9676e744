"""Beam search over removal sequences; width 1 is the paper's greedy procedure.

Greedy (paper, Sec. "pruning"): score every remaining block, remove the least relevant, rescore,
repeat. With ``width > 1`` the ``width`` best partial removal sets (by calibration accuracy of the
pruned model, i.e. relevance relative to the full model) survive each depth, which lets the search
back out of a greedy choice that later proves poor. Pure function over an ``accuracy`` callable;
the caller memoises (``Scorer.accuracy`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from layershear.errors import ScoringError
from layershear.scoring.accuracy import ModelAccuracy
from layershear.scoring.relevance import BlockScore, block_score, check_defined
from layershear.scoring.scorer import SearchPlan
from layershear.search.budget import NO_BUDGET, SearchBudget, Spent, SpentFn
from layershear.search.count import check_count
from layershear.search.objective import AccuracyFn, ChildrenFn, Objective, complete
from layershear.search.result import SearchCost, SearchResult, SearchStep

#: on_step(depth, num_remove, best): called when a depth is complete; ``best`` is the last step of the
#: best path so far (for progress lines and logging).
StepFn = Callable[[int, int, SearchStep], None]


@dataclass(frozen=True)
class _Path:
    steps: tuple[SearchStep, ...]
    accuracy: ModelAccuracy

    @property
    def removed(self) -> tuple[int, ...]:
        return tuple(s.chosen.block_idx for s in self.steps)


def rank_key(score: BlockScore) -> tuple:
    """Deterministic order of candidates: exactly scored ones first (racing eliminates the others),
    then least relevant first; ties broken by higher accuracy, then higher mean gold-choice
    probability, then lower block index."""
    return (not score.exact, score.relevance, -score.accuracy, -score.gold_prob, score.block_idx)


def _expand(path: _Path, children_of: ChildrenFn, num_blocks: int) -> list[_Path]:
    parent = path.accuracy
    children = children_of(parent.removed, [b for b in range(num_blocks) if b not in parent.removed])
    scores = tuple(block_score(parent, acc, b) for b, acc in children.items())
    return [_Path(path.steps + (SearchStep(len(path.steps) + 1, s, scores, parent, children[s.block_idx]),),
                  children[s.block_idx])
            for s in sorted(scores, key=rank_key)]


def _path_key(path: _Path) -> tuple:
    return (*path.accuracy.rank_key, path.removed)


def beam_plan(num_blocks: int, num_remove: int, width: int = 1) -> SearchPlan:
    """What :func:`beam_search` asks of a scorer: at most ``width`` parents per depth, each scoring
    its remaining blocks, plus the full model."""
    return SearchPlan(width=width, depth=num_remove, parents=num_remove * width,
                      models=1 + sum(width * (num_blocks - k) for k in range(num_remove)))


def beam_search(accuracy: AccuracyFn, *, num_blocks: int, num_remove: int, width: int = 1,
                on_step: StepFn | None = None, children: ChildrenFn | None = None,
                budget: SearchBudget = NO_BUDGET, spent: SpentFn = Spent) -> SearchResult:
    """Remove ``num_remove`` of ``num_blocks`` blocks.

    Args:
        accuracy: removed blocks -> calibration :class:`ModelAccuracy` of the model without them.
        num_blocks: N, blocks in the full model.
        num_remove: blocks to remove, 1 <= num_remove < N.
        width: beam width; 1 = greedy.
        on_step: called as ``on_step(depth, num_remove, best_step)`` after each depth.
        children: scores all candidates of one parent at once (default: ``accuracy`` on each).
        budget, spent: checked before each depth; when the budget is spent the best path is
            finished from its last step's relevances (:func:`layershear.search.objective.complete`).

    Returns:
        The best path found; for width 1 exactly the greedy removal order.

    Raises:
        ScoringError: a model on the path is not above random (relevance undefined), or bad sizes.
    """
    check_count(num_remove, num_blocks)
    if width < 1:
        raise ScoringError(f"Beam width must be >= 1, got {width}")
    children_of = children or (lambda removed, blocks: {b: accuracy(removed | {b}) for b in blocks})
    start = spent()
    full = accuracy(frozenset())
    beam = [_Path((), full)]
    expansions = 0
    for depth in range(1, num_remove + 1):
        if depth > 1 and budget.exhausted(spent(), start):
            best = beam[0]
            added, end = complete(Objective(num_blocks, accuracy, children_of), best.removed,
                                  best.steps[-1].candidates, num_remove)
            return SearchResult(num_blocks=num_blocks, removed=best.removed + added, steps=best.steps, full=full,
                                width=width, completed=added, end=end,
                                notes=(f"search budget ({budget.describe()}) spent after {depth - 1} steps; "
                                       f"{len(added)} blocks added from step {depth - 1}'s relevances",),
                                cost=SearchCost.counting(expansions))
        candidates: dict[frozenset[int], _Path] = {}
        alive = [path for path in beam if path.accuracy.above_random]
        if not alive:        # a beam path at chance is set aside; the search stops only when all are
            check_defined(beam[0].accuracy)
        for path in alive:
            expansions += 1
            for child in _expand(path, children_of, num_blocks):
                if not child.accuracy.exact:      # racing showed `width` siblings are better
                    continue
                best = candidates.get(child.accuracy.removed)
                if best is None or _path_key(child) < _path_key(best):
                    candidates[child.accuracy.removed] = child
        beam = sorted(candidates.values(), key=_path_key)[:width]
        if on_step is not None:
            on_step(depth, num_remove, beam[0].steps[-1])
    best = beam[0]
    return SearchResult(num_blocks=num_blocks, removed=best.removed, steps=best.steps, full=full, width=width,
                        cost=SearchCost.counting(expansions))

