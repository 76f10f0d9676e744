"""Scoring-engine switches and the work a Scorer does, counted from batch shapes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from layershear.loglik import EncodedRequest


@dataclass(frozen=True)
class Engine:
    """Switches of the scoring engine; each gives the same numbers with less work.

    ``scored_head``: the LM head (and its log-softmax) only on the scored positions, not on every
    position. ``skip_prefix``: cached-prefix block skipping within a greedy step (see
    :mod:`layershear.prefix_cache`).
    """

    scored_head: bool = True
    skip_prefix: bool = True


#: ``reference``: every candidate runs a full forward over every request with the LM head at every
#: position (lm-eval's computation, the paper's N x T passes). ``fast``: all switches on.
ENGINES: dict[str, Engine] = {"fast": Engine(), "reference": Engine(scored_head=False, skip_prefix=False)}


@dataclass
class EngineStats:
    """Work done by a Scorer, counted from the batch shapes (for benchmarks and layershear.json).

    ``block_tokens`` sums, over forward passes, padded tokens x decoder blocks run; ``head_positions``
    counts the positions that went through the LM head; ``cache_bytes`` is the largest set of cached
    block inputs held at once.
    """

    forward_passes: int = 0
    padded_tokens: int = 0
    block_tokens: int = 0
    head_positions: int = 0
    cache_bytes: int = 0

    def count(self, shapes: Sequence[tuple[int, int, int]], *, blocks_run: int) -> None:
        """Add one pass over the calibration set: ``shapes`` from :func:`batch_shape`, ``blocks_run`` blocks."""
        for rows, width, head_positions in shapes:
            self.forward_passes += 1
            self.padded_tokens += rows * width
            self.block_tokens += rows * width * blocks_run
            self.head_positions += head_positions


def batch_shape(batch: Sequence[EncodedRequest], max_length: int, engine: Engine) -> tuple[int, int, int]:
    """(rows, padded width, LM-head positions) of one batch, as ``loglik.batch_loglikelihoods`` builds it."""
    width = max(min(r.num_tokens, max_length) for r in batch)
    scored = sum(len(r.continuation_ids) for r in batch)
    return len(batch), width, scored if engine.scored_head else len(batch) * width
