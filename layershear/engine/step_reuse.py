"""Step reuse: later greedy steps start their candidates from hidden states stored by earlier ones.

The hidden state entering block k depends only on the blocks before k. So a state that a candidate
run computed for the model without the blocks M serves every later model M' with the same removed
blocks below k:

    M' ∩ [0, k) == M ∩ [0, k)

From that state the later candidate runs only its blocks from k on. Cached-prefix skipping
(:mod:`layershear.engine.prefix_cache`) is the case where M' differs from the current model in block l >= k
alone. Step reuse keeps states for the blocks that later steps are likely to remove. Say step t
removes block r. Step t+1's candidate l < r, the model without the parent, r and l, then starts
after r, not after l.

Which block a step removes is known only once all its candidates are scored. The Scorer therefore
runs the candidates from the last block down. When it runs candidate l, every block after l has
been scored, and the block this step will remove, if it lies after l, is the best child so far.
"Best" is in the search's own order, a rank key the scorer gives with each child
(:attr:`layershear.scoring.accuracy.ModelAccuracy.rank_key`: higher accuracy, then higher gold
probability, then the smaller set of removed blocks). The run of l stores its hidden state
entering the ``keep + extra_guesses`` best children so far (``keep`` = the beam width). Blocks that
a later step removes are often among this step's best too. Candidates that share stacked passes
(:mod:`layershear.engine.stacking`) are scored together, so for the children not scored yet the run also
stores its state entering the ``keep + extra_guesses`` best of them in the previous parent's ranking.

Only states that can save work are stored. With every block input cached, a state entering k must
have a block of l's model between l and k. States are stored only while a later step will read them
(:attr:`StepReuse.until_depth`, from the search's hints, :meth:`StepReuse.expect`).

Memory: each stored state is one block input over the calibration set (``block_bytes``). States are
kept while they fit in the budget that the cache plan leaves unused. Lower candidates come first,
since they skip the most blocks. A state is freed once no later model can match it, that is once
every current parent lacks a block below k that the state's model had, or is the state's own
model below k (then only after the parent's prefix cache has taken it, see ``prefix_states``).
With a beam this is checked against the previous depth's parents, one depth late.
A candidate whose stored state would not save blocks runs from the prefix cache as before. The
numbers are the same either way: the same blocks run on the same batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from layershear.engine.prefix_cache import BlockInputs, checkpoint_blocks

Key = tuple[frozenset[int], int]      # (removed blocks below k, k)


def state_key(removed: frozenset[int], block_idx: int) -> Key:
    """Key of the state entering ``block_idx`` in the model without ``removed``."""
    return frozenset(d for d in removed if d < block_idx), block_idx


def _alive(key: Key, parents: Iterable[frozenset[int]]) -> bool:
    """Whether a descendant of one of ``parents`` can still match ``key``: the parent's removed
    blocks below k are a proper subset of the key's (a descendant only removes more blocks)."""
    below, k = key
    return any({p for p in parent if p < k} < below for parent in parents)


class StepReuse:
    """Stores and serves the hidden states of step reuse (see the module docstring).

    Args:
        block_bytes: bytes of one block's input over the calibration set (one stored state).
        budget_bytes: memory the stored states may use together (negative counts as 0).
        where: ``device`` or ``host`` (pinned), as :class:`layershear.engine.prefix_cache.CachePlan`.
        every: the cache plan's ``every`` (1 = every block input cached; then a state saves work
            only if a kept block lies between the candidate and the state's block).
        keep: children per parent that the search expands next (its beam width).
        extra_guesses: best children so far whose input is stored, beyond ``keep``.
        prefix_states: in greedy search (``keep`` = 1), a storing candidate (see ``_eligible``:
            the lowest ones that fit the budget) that may be removed this step (in the first step
            any, later one of the best ``keep + extra_guesses`` of the previous parent's ranking)
            also stores its inputs of the blocks after it, all or none, after its guesses: if it is
            removed they are the next step's prefix cache (:meth:`take_prefix`), which then needs
            no pass.

    ``until_depth``: states are stored by the runs of children at depths below it (:meth:`expect`
    sets it to the number of blocks the search removes; 0, the default, stores nothing: a single
    scoring pass never reads them).
    """

    def __init__(self, *, block_bytes: int, budget_bytes: int, where: str = "device", every: int = 1,
                 keep: int = 1, extra_guesses: int = 2, prefix_states: bool = True) -> None:
        self.block_bytes = max(1, block_bytes)
        self.budget_bytes = max(0, budget_bytes)
        self.where = where
        self.every = every
        self.keep = keep
        self.extra_guesses = extra_guesses
        self.prefix_states = prefix_states
        self.until_depth = 0
        self.states: dict[Key, BlockInputs] = {}      # key -> inputs holding states[k][batch]
        self._ranked: list[tuple[tuple, int]] = []    # (rank key, block) of the current parent's children
        self._prior: list[int] = []                   # the previous parent's children, best first
        self._reserved = 0                            # states promised to runs not recorded yet
        self._eligible: frozenset[int] = frozenset()
        self._parent: frozenset[int] | None = None
        self._parents_at: dict[int, set[frozenset[int]]] = {}     # depth -> parents seen (beam)

    @property
    def guesses(self) -> int:
        return self.keep + self.extra_guesses

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for (_, k), inp in self.states.items()
                   for t in inp.states.get(k, {}).values())

    def describe(self) -> str:
        """One line for the CLI's plan."""
        return (f"step reuse: room for {self.budget_bytes // self.block_bytes} stored block inputs "
                f"({self.block_bytes / 2**30:.2f} GiB each, on {self.where}; budget "
                f"{self.budget_bytes / 2**30:.2f} GiB); a candidate stores its input of up to {self.guesses} "
                "of the best children so far, lowest candidates first"
                + (", and one that may be removed its inputs of the blocks after it" if self.prefix_states
                   and self.keep == 1 else ""))

    def _free(self, key: Key) -> None:
        self.states.pop(key).states.pop(key[1], None)

    def expect(self, *, width: int, depth: int) -> None:
        """The search's hints: it expands ``width`` children per depth (its beam width) and removes
        ``depth`` blocks, so states are stored for children at depths below ``depth``."""
        self.keep, self.until_depth = width, depth

    def start(self, parent: frozenset[int], candidates: list[int], known: Iterable[tuple[tuple, int]] = ()) -> list[int]:
        """Begin scoring ``candidates`` (children of ``parent``; ``known``: ``(rank key, block)`` of its
        children scored before); returns the candidates in run order (last block first). Frees the states no
        later model can match."""
        depth = len(parent)
        self._reserved = 0
        self._parents_at.setdefault(depth, set()).add(parent)
        judges = [parent] if self.keep == 1 else self._parents_at.get(depth - 1, ())
        if judges:      # a state of the parent's own model may still serve its prefix (take_prefix)
            for key in [key for key in self.states if not _alive(key, judges) and key != state_key(parent, key[1])]:
                self._free(key)
        if parent != self._parent:
            self._prior = [b for _, b in sorted(self._ranked) if b not in parent]
            self._parent, self._ranked = parent, []
            self._ranked += list(known)
        storing = depth + 1 < self.until_depth
        pairs = self._room() if storing else 0
        self._eligible = frozenset(sorted(candidates)[: -(-pairs // self.guesses)])   # lowest first; targets cap
        return sorted(candidates, reverse=True)

    def _room(self) -> int:
        """States that still fit in the budget (less those promised to runs not recorded yet)."""
        return max(0, (self.budget_bytes - self.nbytes) // self.block_bytes - self._reserved)

    def take_prefix(self, parent: frozenset[int], blocks: Iterable[int]) -> dict[int, dict[int, torch.Tensor]]:
        """The stored states of the model without ``parent`` entering ``blocks`` (block -> batch ->
        state), removed from the store; the parent's other own states are freed. The run of the
        block that the previous step removed computed them, so the parent's prefix cache
        (:mod:`layershear.engine.prefix_cache`) needs no pass for those blocks."""
        out = {}
        if not self.prefix_states or self.keep != 1:    # a beam sibling may still use them
            return out
        for k in blocks:
            key = state_key(parent, k)
            if key in self.states:
                out[k] = self.states.pop(key).states.pop(k)
        for key in [key for key in self.states if key == state_key(parent, key[1])]:
            self._free(key)
        return out

    def lookup(self, removed: frozenset[int], after: int) -> tuple[int, BlockInputs] | None:
        """``(k, inputs)``: the stored state with the largest k > ``after`` that enters block k in the
        model without ``removed`` (``inputs.states[k]``); None when there is none."""
        best = None
        for (below, k), inputs in self.states.items():
            if k > after and (best is None or k > best[0]) and below == state_key(removed, k)[0]:
                best = (k, inputs)
        return best

    def targets(self, removed: frozenset[int], block: int, capturable: list[int], num_blocks: int) -> list[int]:
        """Blocks whose input the run of candidate ``block`` (the model without ``removed``) should store:
        the best children so far that the run computes, that are not stored already, and whose
        state can save a later run some blocks."""
        if block not in self._eligible:
            return []
        scored = {b for _, b in self._ranked}
        best = [b for _, b in sorted(self._ranked)[: self.guesses]]
        best += [b for b in self._prior[: self.guesses] if b not in scored]     # not scored yet (stacked runs)
        kept = [x for x in range(num_blocks) if x not in removed]
        useful = sorted(k for k in best if k > block and k in capturable and state_key(removed, k) not in self.states
                        and (self.every > 1 or any(block < x < k for x in kept)))
        useful = useful[: self._room()]
        if self.prefix_states and self.keep == 1 and (not self._prior or block in best):    # it may be removed:
            own = {k for k in capturable if k > block and k in checkpoint_blocks(kept, self.every)}  # next prefix cache
            if own and not any(state_key(removed, k) in self.states for k in own) and len(own - set(useful)) <= \
                    self._room() - len(useful):       # all of them or none: a partial prefix saves no pass
                useful = sorted(set(useful) | own)
        self._reserved += len(useful)
        return useful

    def record(self, block: int, key: tuple, stored: BlockInputs | None) -> None:
        """Note the child's rank key (lower = better), and keep the states its run stored (``stored.removed`` = its model).
        Each kept state gets its own :class:`BlockInputs`, so freeing a key frees its tensors."""
        self._ranked.append((key, block))
        if stored is None:
            return
        self._reserved = max(0, self._reserved - len(stored.stored))
        for k in stored.stored:
            if stored.states.get(k):
                one = BlockInputs(stored.removed, where=stored.where, stored=[k])
                one.states[k] = stored.states[k]
                self.states[state_key(stored.removed, k)] = one
