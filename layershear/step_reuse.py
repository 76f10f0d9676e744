"""Step reuse: later greedy steps start their candidates from hidden states stored by earlier ones.

The hidden state entering block k depends only on the blocks before k. So a state that a candidate
run computed for the model without the blocks M serves every later model M' with the same removed
blocks below k:

    M' ∩ [0, k) == M ∩ [0, k)

From that state the later candidate runs only its blocks from k on. Cached-prefix skipping
(:mod:`layershear.prefix_cache`) is the case where M' differs from the current model in block l >= k
alone. Step reuse keeps states for the blocks that later steps are likely to remove. Say step t
removes block r. Step t+1's candidate l < r, the model without the parent, r and l, then starts
after r, not after l.

Which block a step removes is known only once all its candidates are scored. The Scorer therefore
runs the candidates from the last block down. When it runs candidate l, every block after l has
been scored, and the block this step will remove, if it lies after l, is the best child so far.
"Best" is in the search's own order (:func:`layershear.search.beam._path_key`): higher accuracy,
then higher gold probability, then the smaller drop set. The run of l stores its hidden state
entering the ``guesses`` best children so far (default ``keep + 2``; ``keep`` = the beam width).
Blocks that a later step removes are often among this step's best too.

Memory: each stored state is one block input over the calibration set (``block_bytes``). States are
kept while they fit in the budget that the cache plan leaves unused. Lower candidates come first,
since they skip the most blocks. A state is freed once no later model can match it, because the
parent now lacks a block below k that the state's model had. A candidate without a matching state
runs from the prefix cache as before. The numbers are the same either way: the same blocks run on
the same batches.
"""

from __future__ import annotations

from layershear.prefix_cache import BlockInputs

Key = tuple[frozenset[int], int]      # (removed blocks below k, k)


def child_key(evaluation) -> tuple:
    """Order of children in the search: higher accuracy, higher gold probability, smaller drop set."""
    return (-evaluation.accuracy, -evaluation.gold_prob, tuple(sorted(evaluation.drop)))


def state_key(drop: frozenset[int], block_idx: int) -> Key:
    """Key of the state entering ``block_idx`` in the model without ``drop``."""
    return frozenset(d for d in drop if d < block_idx), block_idx


class StepReuse:
    """Stores and serves the hidden states of step reuse (see the module docstring).

    Args:
        block_bytes: bytes of one block's input over the calibration set (one stored state).
        budget_bytes: memory the stored states may use together.
        where: ``device`` or ``host`` (pinned), as :class:`layershear.prefix_cache.CachePlan`.
        keep: children per parent that the search expands next (its beam width).
        guesses: best children so far whose input a candidate run stores (default ``keep + 2``).
    """

    def __init__(self, *, block_bytes: int, budget_bytes: int, where: str = "device", keep: int = 1,
                 guesses: int | None = None) -> None:
        self.block_bytes = max(1, block_bytes)
        self.budget_bytes = budget_bytes
        self.where = where
        self.keep = keep
        self._guesses = guesses
        self.states: dict[Key, BlockInputs] = {}      # key -> inputs holding states[k][batch]
        self._ranked: list[tuple[tuple, int]] = []    # (child_key, block) of the current parent's children
        self._eligible: frozenset[int] = frozenset()
        self._parent: frozenset[int] | None = None

    @property
    def guesses(self) -> int:
        return self._guesses or self.keep + 2

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for (_, k), inp in self.states.items()
                   for t in inp.states.get(k, {}).values())

    def describe(self, num_blocks: int) -> str:
        """One line for the CLI's plan."""
        fit = self.budget_bytes // self.block_bytes
        return (f"step reuse: room for {fit} stored block inputs ({self.block_bytes / 2**30:.2f} GiB each, on "
                f"{self.where}; budget {self.budget_bytes / 2**30:.2f} GiB); each of up to {num_blocks - 1} "
                f"candidates per step stores its input of the {self.guesses} best children so far")

    def start(self, parent: frozenset[int], candidates: list[int]) -> list[int]:
        """Begin scoring ``candidates`` (children of ``parent``); returns them in run order (last block
        first). With a beam of 1 every later model lacks ``parent``'s blocks, so a state is freed when
        its model had one of them below k (no later model matches it), or lacked no other block
        below k (it is the parent's own, which the prefix cache holds)."""
        if self.keep == 1:
            below = {k: {p for p in parent if p < k} for _, k in self.states}
            for key in [(s, k) for s, k in self.states if not below[k] <= s or s <= below[k]]:
                del self.states[key]
        if parent != self._parent:
            self._parent, self._ranked = parent, []
        pairs = max(0, self.budget_bytes - self.nbytes) // self.block_bytes
        self._eligible = frozenset(sorted(candidates)[: pairs // self.guesses])
        return sorted(candidates, reverse=True)

    def lookup(self, drop: frozenset[int], after: int) -> tuple[int, BlockInputs] | None:
        """``(k, inputs)``: the stored state with the largest k > ``after`` that enters block k in the
        model without ``drop`` (``inputs.states[k]``); None when there is none."""
        best = None
        for (below, k), inputs in self.states.items():
            if k > after and (best is None or k > best[0]) and below == state_key(drop, k)[0]:
                best = (k, inputs)
        return best

    def targets(self, drop: frozenset[int], block: int, capturable: list[int]) -> list[int]:
        """Blocks whose input the run of candidate ``block`` (the model without ``drop``) should store:
        the best children so far that the run computes and that are not stored already."""
        if block not in self._eligible:
            return []
        best = [b for _, b in sorted(self._ranked)[: self.guesses]]
        return sorted(k for k in best if k > block and k in capturable and state_key(drop, k) not in self.states)

    def record(self, block: int, evaluation, stored: BlockInputs | None) -> None:
        """Note the child's evaluation, and keep the states its run stored (``stored.drop`` = its model)."""
        self._ranked.append((child_key(evaluation), block))
        if stored is not None:
            for k in stored.stored:
                if stored.states.get(k):
                    self.states[state_key(stored.drop, k)] = stored
