"""How one candidate model is computed: which blocks it skips and which cached state it starts from.

Candidate f_-b of a greedy step runs the current model's blocks after b from the cached input of b
(:mod:`layershear.engine.prefix_cache`), or from a state an earlier step's run stored
(:mod:`layershear.engine.step_reuse`); the Scorer runs a :class:`Run` inside ``remove_blocks(run.skipped)``
with ``run.hook`` entered.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from layershear.engine.prefix_cache import BlockInputs, capturing, injecting


@dataclass(frozen=True)
class Run:
    """One candidate's forward: the blocks left out (``skipped``), a hook factory ``hook(model)`` that
    injects cached states (None: a plain forward), whether the one block run is bypassed, and the
    block-input caches whose ``batch`` the loop must set."""

    skipped: frozenset[int]
    hook: Callable | None = None
    bypass: bool = False
    caches: tuple[BlockInputs, ...] = ()
    source: tuple[BlockInputs, int] | None = None    # (cache, block): the injected state is cache.states[block]

    def capturing(self, ran: list[int], stored: BlockInputs, blocks: set[int] | None = None) -> Run:
        """This run, also storing in ``stored`` the inputs of ``blocks`` (default ``stored.stored``);
        ``ran``: the blocks run, in order."""
        inject = self.hook
        blocks = set(stored.stored) if blocks is None else blocks

        def hook(model):
            stack = contextlib.ExitStack()
            if inject is not None:
                stack.enter_context(inject(model))     # registered first: capture sees the injected state
            stack.enter_context(capturing(model, ran, stored, blocks))
            return stack
        return dataclasses.replace(self, hook=hook, caches=(*self.caches, stored))


def child_run(cache: BlockInputs | None, parent: frozenset[int], b: int, num_blocks: int) -> Run:
    """How to compute f without ``b`` (f = the model without ``parent``, ``num_blocks`` blocks in
    all) from ``cache``, the block inputs of f (None: a full forward)."""
    if cache is None:
        return Run(parent | {b})
    kept = [k for k in range(num_blocks) if k not in parent]
    start = cache.checkpoint_before(b)          # b itself unless only checkpoints are cached
    if start == b:
        last = b == kept[-1]
        skipped = parent | {k for k in kept if (k < b if last else k <= b)}
    else:                                       # run blocks start..b-1 again, skip b, run the rest
        last = False
        skipped = parent | {k for k in kept if k < start} | {b}
    return Run(skipped, lambda m: injecting(m, cache, start, bypass=last), bypass=last, caches=(cache,),
               source=(cache, start))


def stored_run(removed: frozenset[int], k: int, inputs: BlockInputs, num_blocks: int) -> Run | None:
    """How to compute the model without ``removed`` from the stored state entering block ``k``
    (:mod:`layershear.engine.step_reuse`): run its blocks from k on (None: no block is left)."""
    rest = [x for x in range(num_blocks) if x not in removed]
    if not rest:
        return None
    after = [x for x in rest if x >= k]
    first = after[0] if after else rest[-1]     # no block from k on: run the last one, bypassed
    skipped = frozenset(x for x in range(num_blocks) if x != first and (x < first or x not in rest))
    return Run(skipped, lambda m: injecting(m, inputs, k, bypass=not after), bypass=not after, caches=(inputs,),
               source=(inputs, k))
