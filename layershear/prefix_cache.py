"""Cached-prefix block skipping: run a candidate f_-l only from the block after l.

Within one greedy step every candidate f_-l equals the current model f up to block l, so the hidden
state entering block l is the same for f and f_-l, and in f_-l it is also the input of the next kept
block. One forward of f per step captures the input of every block (forward pre-hooks); candidate l
then runs with all blocks up to and including l removed (``drop_blocks``, no weight copies) and a
pre-hook that replaces the input of its first remaining block by the cached state. Embeddings are
recomputed (cheap); masks and position embeddings come from the model's own forward, so this works
for every architecture ``drop_blocks`` supports, and on the same batches it computes exactly what the
full forward of f_-l computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from layershear.arch import decoder_blocks


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


class BlockInputs:
    """Hidden states entering each block of one model, per batch: ``states[block_idx][batch]``.

    Each tensor has shape ``[batch_rows, seq_len, hidden_size]`` in the model's dtype, on its device.
    """

    def __init__(self, drop: frozenset[int]) -> None:
        self.drop = drop
        self.states: dict[int, list[torch.Tensor]] = {}
        self.batch = 0   # index of the batch being run; advanced by the caller after each forward

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self.states.values() for t in ts)


@contextmanager
def capturing(model, kept: list[int], cache: BlockInputs) -> Iterator[None]:
    """Inside (and inside ``drop_blocks(model, cache.drop)``), record the input of every kept block."""
    handles = []
    for module, block_idx in zip(decoder_blocks(model), kept):
        def hook(_module, args, kwargs, block_idx=block_idx):
            cache.states.setdefault(block_idx, []).append(_hidden(args, kwargs).detach().clone())
        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def injecting(model, cache: BlockInputs, block_idx: int, *, bypass: bool = False) -> Iterator[None]:
    """Feed the cached input of ``block_idx`` to the model's first block, batch by batch.

    Use inside ``drop_blocks`` that removed every block before the first one run. With ``bypass``
    the first block's output is replaced by that cached state too: the model then computes f without
    ``block_idx`` when ``block_idx`` was its last block (only the final norm and LM head follow).
    """
    first = decoder_blocks(model)[0]

    def cached() -> torch.Tensor:
        return cache.states[block_idx][cache.batch]

    def pre_hook(_module, args, kwargs):
        if _hidden(args, kwargs).shape != cached().shape:
            raise RuntimeError("cached block input does not match the batch being run")  # a layershear bug
        return _with_hidden(args, kwargs, cached())

    def post_hook(_module, _args, output):
        return (cached(), *output[1:]) if isinstance(output, tuple) else cached()

    handles = [first.register_forward_pre_hook(pre_hook, with_kwargs=True)]
    if bypass:
        handles.append(first.register_forward_hook(post_hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
