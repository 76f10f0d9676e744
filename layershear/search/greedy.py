"""GreedyPruner: the paper's iterative removal of the least relevant block (optionally beam search)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from layershear.errors import LayershearError
from layershear.scoring.scorer import Scorer
from layershear.search.beam import StepFn, beam_search
from layershear.search.result import SearchResult


def check_ratio(ratio: float) -> None:
    """Raises LayershearError unless 0 < ratio < 1."""
    if not 0.0 < ratio < 1.0:
        raise LayershearError(f"--ratio must be in (0, 1), got {ratio}; e.g. --ratio 0.25 removes a quarter of the blocks")


def num_blocks_to_drop(num_blocks: int, *, ratio: float | None = None, num: int | None = None) -> int:
    """Blocks to remove from ``num_blocks``: ``num`` as given, or ``round(ratio * num_blocks)`` (halves up).

    Raises:
        LayershearError: neither or both given, ratio outside (0, 1), or a count outside [1, N-1].
    """
    if (ratio is None) == (num is None):
        raise LayershearError("Give exactly one of --ratio or --num-blocks")
    if ratio is not None:
        check_ratio(ratio)
        num = int((Decimal(str(ratio)) * num_blocks).to_integral_value(rounding=ROUND_HALF_UP))
    if num is None or not 1 <= num < num_blocks:
        raise LayershearError(f"Cannot remove {num} of {num_blocks} blocks; choose between 1 and {num_blocks - 1}")
    return num


class GreedyPruner:
    """Iteratively remove the least relevant decoder block (AccBasedRelevance), rescoring after each removal.

    Args:
        scorer: evaluates the calibration accuracy of any drop set.
        beam_width: 1 = the paper's greedy search; > 1 keeps that many partial drop sets per depth
            (backtracking beyond greedy), ranked by calibration accuracy of the pruned model.

    Example:
        >>> result = GreedyPruner(scorer).prune(num_drop=8)
        >>> result.removed        # original block indices, in removal order
    """

    def __init__(self, scorer: Scorer, *, beam_width: int = 1, on_step: StepFn | None = None) -> None:
        self.scorer = scorer
        self.beam_width = beam_width
        if scorer.step_reuse is not None:     # keep states for as many children as the beam expands
            scorer.step_reuse.keep = beam_width
        self.on_step = on_step

    def prune(self, num_drop: int) -> SearchResult:
        """Run the search; see :func:`layershear.search.beam.beam_search` for errors raised."""
        if self.scorer.step_reuse is not None:      # children at depths below num_drop store states for later steps
            self.scorer.step_reuse.until_depth = num_drop
        return beam_search(self.scorer.evaluate, num_blocks=self.scorer.num_blocks, num_drop=num_drop,
                           width=self.beam_width, on_step=self.on_step, children=self.scorer.evaluate_children)
