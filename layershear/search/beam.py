"""Beam search over removal sequences; width 1 is the paper's greedy procedure.

Greedy (paper, Sec. "pruning"): score every remaining block, drop the least relevant, rescore,
repeat. With ``width > 1`` the ``width`` best partial drop sets (by calibration accuracy of the
pruned model, i.e. relevance relative to the full model) survive each depth, which lets the search
back out of a greedy choice that later proves poor. Pure function over an ``evaluate`` callable;
the caller memoises (``Scorer.evaluate`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from layershear.errors import ScoringError
from layershear.scoring.relevance import BlockScore, Evaluation, block_score
from layershear.search.result import SearchResult, SearchStep

Evaluate = Callable[[frozenset[int]], Evaluation]
#: children(drop, blocks) -> {b: evaluation of the model without drop | {b}}; lets a scorer share work
#: between the candidates of one step (``Scorer.evaluate_children``).
Children = Callable[[frozenset[int], list[int]], dict[int, Evaluation]]
#: on_step(depth, num_drop, best): called when a depth is complete; ``best`` is the last step of the
#: best path so far (for progress lines and logging).
StepFn = Callable[[int, int, SearchStep], None]


@dataclass(frozen=True)
class _Path:
    steps: tuple[SearchStep, ...]
    evaluation: Evaluation

    @property
    def removed(self) -> tuple[int, ...]:
        return tuple(s.chosen.block_idx for s in self.steps)


def rank_key(score: BlockScore) -> tuple:
    """Deterministic order of candidates: exactly scored ones first (racing drops the others), then
    least relevant first; ties broken by higher accuracy, then higher mean gold-choice probability,
    then lower block index."""
    return (not score.exact, score.relevance, -score.accuracy, -score.gold_prob, score.block_idx)


def _undefined(parent: Evaluation) -> ScoringError:
    return ScoringError(
        f"relevance is undefined: with blocks {sorted(parent.drop)} removed the calibration accuracy "
        f"{parent.accuracy:.4f} is not above random ({parent.random:.4f}); remove fewer blocks or use "
        "calibration tasks on which the model is above chance")


def _expand(path: _Path, children_of: Children, num_blocks: int) -> list[_Path]:
    parent = path.evaluation
    children = children_of(parent.drop, [b for b in range(num_blocks) if b not in parent.drop])
    scores = tuple(block_score(parent, ev, b) for b, ev in children.items())
    return [_Path(path.steps + (SearchStep(len(path.steps) + 1, s, scores, parent, children[s.block_idx]),),
                  children[s.block_idx])
            for s in sorted(scores, key=rank_key)]


def _path_key(path: _Path) -> tuple:
    ev = path.evaluation
    return (-ev.accuracy, -ev.gold_prob, tuple(sorted(ev.drop)), path.removed)


def beam_search(evaluate: Evaluate, *, num_blocks: int, num_drop: int, width: int = 1,
                on_step: StepFn | None = None, children: Children | None = None) -> SearchResult:
    """Remove ``num_drop`` of ``num_blocks`` blocks.

    Args:
        evaluate: drop set -> calibration :class:`Evaluation` of the model without those blocks.
        num_blocks: N, blocks in the full model.
        num_drop: blocks to remove, 1 <= num_drop < N.
        width: beam width; 1 = greedy.
        on_step: called as ``on_step(depth, num_drop, best_step)`` after each depth.
        children: evaluates all candidates of one parent at once (default: ``evaluate`` on each).

    Returns:
        The best path found; for width 1 exactly the greedy removal order.

    Raises:
        ScoringError: a model on the path is not above random (relevance undefined), or bad sizes.
    """
    if not 1 <= num_drop < num_blocks:
        raise ScoringError(f"Cannot remove {num_drop} of {num_blocks} blocks; choose between 1 and {num_blocks - 1}")
    if width < 1:
        raise ScoringError(f"Beam width must be >= 1, got {width}")
    children_of = children or (lambda drop, blocks: {b: evaluate(drop | {b}) for b in blocks})
    full = evaluate(frozenset())
    beam = [_Path((), full)]
    for depth in range(1, num_drop + 1):
        candidates: dict[frozenset[int], _Path] = {}
        alive = [path for path in beam if path.evaluation.above_random]
        if not alive:        # a beam path at chance is dropped; the search stops only when all are
            raise _undefined(beam[0].evaluation)
        for path in alive:
            for child in _expand(path, children_of, num_blocks):
                if not child.evaluation.exact:      # racing showed `width` siblings are better
                    continue
                best = candidates.get(child.evaluation.drop)
                if best is None or _path_key(child) < _path_key(best):
                    candidates[child.evaluation.drop] = child
        beam = sorted(candidates.values(), key=_path_key)[:width]
        if on_step is not None:
            on_step(depth, num_drop, beam[0].steps[-1])
    best = beam[0]
    return SearchResult(num_blocks=num_blocks, removed=best.removed, steps=best.steps, full=full, beam_width=width)
