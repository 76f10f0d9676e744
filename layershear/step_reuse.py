"""Step reuse: in the next greedy step, a candidate before the removed block starts after that block.

Step t scores every candidate f_-l of the current model f (the model without ``parent``); each runs
the blocks after l (:mod:`layershear.prefix_cache`). Say step t removes block r. Step t+1 then
scores f_-r-l for every remaining block l. For l < r that model equals f_-l up to block r, so the
hidden state that entered r in step t's run of f_-l is, in f_-r-l, the input of the first block
after r. Stored, it lets the candidate run only the blocks after r, where cached-prefix skipping
alone would rerun the blocks between l and r.

Which block step t removes is known only once all its candidates are scored. The Scorer therefore
runs the candidates from the last block down. When it runs candidate l, every block after l has
been scored, and if the block to be removed lies after l, it is the best child so far. "Best" is
in the search's own order (:func:`layershear.search.beam._path_key`): higher accuracy, then higher
gold probability, then the smaller drop set. The run of l stores its hidden state entering the
``keep`` best children so far (``keep`` = the beam width). States for a child that falls out of the
top ``keep`` are freed.

Memory: each stored state is one block input over the calibration set (``block_bytes``). States are
kept while they fit in the budget that the cache plan leaves unused. Lower candidates come first,
since they skip the most blocks. A candidate without a stored state runs from the prefix cache as
before. The numbers are the same either way: the same blocks run on the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from layershear.prefix_cache import BlockInputs


def child_key(evaluation) -> tuple:
    """Order of children in the search: higher accuracy, higher gold probability, smaller drop set."""
    return (-evaluation.accuracy, -evaluation.gold_prob, tuple(sorted(evaluation.drop)))


@dataclass
class _Store:
    """States stored by the children runs of one parent: ``inputs[l].states[k][batch]`` is the hidden
    state entering block k in the run of the model without parent and l."""

    parent: frozenset[int]
    inputs: dict[int, BlockInputs] = field(default_factory=dict)
    ranked: list[tuple[tuple, int]] = field(default_factory=list)    # (child_key, block) of children scored
    eligible: frozenset[int] = frozenset()                            # candidates whose runs may store states


class StepReuse:
    """Stores and serves the hidden states of step reuse (see the module docstring).

    Args:
        block_bytes: bytes of one block's input over the calibration set (one stored state).
        budget_bytes: memory the stored states may use together.
        where: ``device`` or ``host`` (pinned), as :class:`layershear.prefix_cache.CachePlan`.
        keep: children per parent that the search expands next (its beam width).
    """

    def __init__(self, *, block_bytes: int, budget_bytes: int, where: str = "device", keep: int = 1) -> None:
        self.block_bytes = max(1, block_bytes)
        self.budget_bytes = budget_bytes
        self.where = where
        self.keep = keep
        self.stores: dict[frozenset[int], _Store] = {}

    def describe(self, num_blocks: int) -> str:
        """One line for the CLI's plan: how many candidates of a step can keep a state for the next."""
        fit = min(self.budget_bytes // self.block_bytes // max(1, self.keep), num_blocks - 1)
        return (f"step reuse: up to {fit} of {num_blocks - 1} candidates per step keep a state for the next step "
                f"({self.block_bytes / 2**30:.2f} GiB each, on {self.where}; budget "
                f"{self.budget_bytes / 2**30:.2f} GiB)")

    @property
    def nbytes(self) -> int:
        return sum(inp.nbytes for store in self.stores.values() for inp in store.inputs.values())

    def start(self, parent: frozenset[int], candidates: list[int]) -> list[int]:
        """Begin scoring ``candidates`` (children of ``parent``); returns them in run order (last block
        first). Frees the stores of parents two or more removals above ``parent``."""
        for old in [p for p in self.stores if len(p) < len(parent) - 1]:
            del self.stores[old]
        store = self.stores.setdefault(parent, _Store(parent))
        pairs = max(0, self.budget_bytes - self.nbytes) // self.block_bytes
        store.eligible = frozenset(sorted(candidates)[: pairs // max(1, self.keep)])
        return sorted(candidates, reverse=True)

    def source(self, parent: frozenset[int], block: int) -> tuple[int, BlockInputs] | None:
        """``(r, inputs)`` when the child ``parent | {block}`` can start after block ``r`` (removed in
        the last step) from ``inputs.states[r]``; None otherwise."""
        for r in sorted(parent, reverse=True):
            store = self.stores.get(parent - {r})
            inputs = store.inputs.get(block) if store is not None and block < r else None
            if inputs is not None and r in inputs.states:
                return r, inputs
        return None

    def targets(self, parent: frozenset[int], block: int, capturable: list[int]) -> list[int]:
        """Blocks whose input the run of candidate ``block`` should store: the ``keep`` best children
        scored so far, where that run computes their input (``capturable``)."""
        store = self.stores[parent]
        if block not in store.eligible:
            return []
        best = [b for _, b in sorted(store.ranked)[: self.keep]]
        return sorted(k for k in best if k > block and k in capturable)

    def record(self, parent: frozenset[int], block: int, evaluation, inputs: BlockInputs | None) -> None:
        """Note the child's evaluation and keep what its run stored; free states that can no longer be used."""
        store = self.stores[parent]
        store.ranked.append((child_key(evaluation), block))
        if inputs is not None and inputs.states:
            store.inputs[block] = inputs
        top = {b for _, b in sorted(store.ranked)[: self.keep]}
        for lower, inp in list(store.inputs.items()):
            for k in [k for k in inp.states if k not in top]:
                del inp.states[k]
            if not inp.states:
                del store.inputs[lower]

    def release(self, used: tuple[int, BlockInputs]) -> None:
        """Free a state once the child it served has been scored (each serves one child)."""
        r, inputs = used
        inputs.states.pop(r, None)
