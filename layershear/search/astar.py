"""A*-style best-first search over partial removal sets, anytime within a search budget.

The objective is greedy's: the calibration accuracy Acc(f_-S, D) of the final removal set S,
|S| = k. A node is a partial set T (|T| = d); its priority is an estimate of the best final accuracy
reachable from it:

    f(T) = Acc(T) - h(T),   h(T) = sum of the (k - d) smallest single-block drops measured at T's parent P
                                   (drop(b) = Acc(P) - Acc(P + b), over the blocks of P's children other
                                   than T's own)

(the drops of T's own children are not known until T is expanded, so the parent's serve as the
estimate). The first path expanded is greedy's (the best child at every depth), so the search starts with
greedy's set as its incumbent and never returns a worse one. Then the open node with the highest f
is expanded next: all its children are scored (one
:meth:`layershear.scoring.scorer.Scorer.children` call, sharing the cached block inputs), and each
child enters the queue with its own f; a complete child (|T| = k) enters with f = Acc(T), its exact
objective. Without a budget (and always with ``admissible``) the search stops when a complete set is
the best open node (no open node's estimate beats it). With a budget it is *anytime*: it goes on
expanding the most promising open nodes (the estimate being only a heuristic, a node estimated
below the best complete set may still hold a better one) until the budget is spent or the queue is
empty, and returns the best complete set scored; if the budget ran out before greedy's path was
complete, it finishes that path from its last relevances.

**No estimate is admissible in general**: removing a block can raise the calibration accuracy, and
two blocks can compensate each other, so the true final accuracy can exceed any f computed from
measured drops. The default (``additive``) estimate is therefore a heuristic. ``admissible=True``
clips the drops at 0; the resulting f is an upper bound on every completion of T, and the first
complete set popped is the optimum, **if** (a) removing a block never raises the accuracy and (b)
the drop of removing a block never shrinks as more blocks are removed (the accuracy is
supermodular-decreasing: blocks do not stand in for each other). Real models break both at times,
so even this mode is exact only on objectives that meet (a) and (b); it also expands far more nodes.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from layershear.errors import ScoringError
from layershear.scoring.accuracy import ModelAccuracy
from layershear.scoring.relevance import block_score, check_defined
from layershear.search.beam import StepFn, rank_key
from layershear.search.budget import NO_BUDGET, SearchBudget
from layershear.search.count import check_count
from layershear.search.objective import Objective, complete
from layershear.search.result import SearchCost, SearchResult, SearchStep


@dataclass(frozen=True)
class AStarSettings:
    """``admissible``: clip measured drops at 0 (an upper bound under the assumptions in the module
    docstring; expands more nodes). ``max_open``: open nodes kept at most (the lowest-priority ones
    are dropped beyond it, bounding memory)."""

    admissible: bool = False
    max_open: int = 100_000


#: the default settings
ASTAR = AStarSettings()


@dataclass(frozen=True)
class _Node:
    removed: frozenset[int]
    steps: tuple[SearchStep, ...]
    accuracy: ModelAccuracy
    estimate: float            # f(T): estimated final accuracy

    def key(self) -> tuple:
        """Priority order (lower first): highest estimate, then the objective's own order."""
        return (-self.estimate, *self.accuracy.rank_key)


def astar_search(objective: Objective, *, num_remove: int, budget: SearchBudget = NO_BUDGET,
                 settings: AStarSettings = ASTAR, on_step: StepFn | None = None) -> SearchResult:
    """Best-first search for the ``num_remove`` blocks whose removal keeps the highest calibration accuracy.

    Args:
        objective: the scorer's calls (:class:`layershear.search.objective.Objective`).
        num_remove: k, blocks to remove, 1 <= k < N.
        budget: evaluations / block-tokens; checked before every expansion.
        settings: :class:`AStarSettings`.
        on_step: called as ``on_step(depth, num_remove, step)`` after each expansion (``step``: the
            best child of the expanded node).

    Returns:
        The best complete set found, with its path (``steps``: one per removal, each with the
        candidates scored at that node), ``name="astar"``; ``completed`` non-empty when the budget
        ran out before a complete set was the best open node.

    Raises:
        ScoringError: the full model (or every open node) is not above random on D.
    """
    num_blocks = objective.num_blocks
    check_count(num_remove, num_blocks)
    start = objective.spent()
    full = check_defined(objective.accuracy(frozenset()))
    counter = itertools.count()
    root = _Node(frozenset(), (), full, full.accuracy)
    heap: list[tuple[tuple, int, _Node]] = []          # open nodes; the root is expanded first, below
    queued: dict[frozenset[int], float] = {root.removed: root.estimate}
    expanded: set[frozenset[int]] = set()
    best: _Node | None = None                  # the best complete set scored so far
    expansions = 0

    def expand(node: _Node) -> list[_Node]:
        """Score the children of ``node``, queue them; returns them (exact ones only), best first."""
        nonlocal best, expansions
        expanded.add(node.removed)
        expansions += 1
        blocks = [b for b in range(num_blocks) if b not in node.removed]
        children = objective.children(node.removed, blocks)
        scores = tuple(block_score(node.accuracy, acc, b) for b, acc in children.items())
        drops = {b: node.accuracy.accuracy - acc.accuracy for b, acc in children.items()}
        if settings.admissible:
            drops = {b: max(d, 0.0) for b, d in drops.items()}
        left = num_remove - len(node.removed) - 1          # removals after the child's
        ordered = sorted(drops.values())
        out = []
        for score in sorted(scores, key=rank_key):
            child = children[score.block_idx]
            if not child.exact:                            # racing: confidently not among the best
                continue
            removed = node.removed | {score.block_idx}
            rest = list(ordered)
            rest.remove(drops[score.block_idx])
            step = SearchStep(len(node.removed) + 1, score, scores, node.accuracy, child)
            new = _Node(removed, node.steps + (step,), child, child.accuracy - sum(rest[:left]))
            out.append(new)
            if len(removed) == num_remove and (best is None or child.rank_key < best.accuracy.rank_key):
                best = new
            if removed in expanded or queued.get(removed, -float("inf")) >= new.estimate:
                continue
            queued[removed] = new.estimate
            heapq.heappush(heap, (new.key(), next(counter), new))
        if on_step is not None and out:
            on_step(len(node.removed) + 1, num_remove, out[0].steps[-1])
        return out

    # the first path is greedy's (the best child at every depth): an incumbent as good as greedy's set
    node, out_of_budget = root, False
    while True:
        if 0 < len(node.removed) < num_remove - 1 and budget.exhausted(objective.spent(), start):
            out_of_budget = True               # the root and the last step of the path are always expanded
            break
        children = expand(node)
        if len(node.removed) == num_remove - 1 or not children or not children[0].accuracy.above_random:
            break
        node = children[0]
    dive = node                                # where greedy's path stopped (the budget, or chance level)
    while heap and not out_of_budget:
        _, _, node = heapq.heappop(heap)
        if best is not None and node.estimate <= best.accuracy.accuracy and (settings.admissible or budget.unlimited):
            break                              # no open node is estimated to beat the best complete set
        if len(node.removed) == num_remove:
            if settings.admissible or budget.unlimited:
                break                          # a complete set outranks every open node
            continue                           # a budget left: keep expanding the next most promising nodes
        if node.removed in expanded or not node.accuracy.above_random:
            continue                           # relevance is undefined below chance: not expanded
        if budget.exhausted(objective.spent(), start):
            out_of_budget = True
            heapq.heappush(heap, (node.key(), next(counter), node))
            break
        expand(node)
        if len(heap) > settings.max_open:
            heap = heapq.nsmallest(settings.max_open, heap)
            heapq.heapify(heap)
    notes: tuple[str, ...] = ()
    completed: tuple[int, ...] = ()
    if best is None:
        if not heap:
            raise ScoringError("every partial removal set the search reached is at or below chance on the calibration "
                               "set (relevance undefined); remove fewer blocks or use tasks the model is above chance on")
        node = dive if dive.steps else min(heap)[2]
        completed, end = complete(objective, sorted(node.removed), node.steps[-1].candidates, num_remove)
        best = _Node(node.removed | set(completed), node.steps, end, end.accuracy)
        notes = (f"search budget ({budget.describe()}) spent before a complete set was found; {len(completed)} "
                 f"blocks added from the relevances at the end of greedy's path",)
    elif out_of_budget:
        notes = (f"search budget ({budget.describe()}) spent after {expansions} expansions; the best complete set "
                 "found is returned",)
    path = tuple(s.chosen.block_idx for s in best.steps) + completed
    return SearchResult(num_blocks=num_blocks, removed=path, steps=best.steps, full=full, name="astar",
                        completed=completed, end=best.accuracy if completed else None,
                        cost=SearchCost.counting(expansions), notes=notes)


__all__ = ["ASTAR", "AStarSettings", "astar_search"]
