"""Cached-prefix block skipping: run a candidate f_-l only from the block after l.

Within one greedy step every candidate f_-l equals the current model f up to block l, so the hidden
state entering block l is the same for f and f_-l, and in f_-l it is also the input of the next kept
block. One forward of f per step captures the input of every block (forward pre-hooks); candidate l
then runs with all blocks up to and including l removed (``remove_blocks``, no weight copies) and a
pre-hook that replaces the input of its first remaining block by the cached state. Embeddings are
recomputed (cheap); masks and position embeddings come from the model's own forward, so this works
for every architecture ``remove_blocks`` supports, and on the same batches it computes exactly what the
full forward of f_-l computes.

When the inputs of every block do not fit, :func:`plan_cache` keeps them in host memory (CUDA) or
keeps only every k-th block's input (checkpoints): candidate l then runs from the nearest checkpoint
c <= l through blocks c..l-1 and l+1..end, which costs (l - c) extra blocks and gives the same result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from layershear.model.arch import decoder_blocks


def hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a decoder block is called with (first positional or ``hidden_states``)."""
    return args[0] if args else kwargs["hidden_states"]


def with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    """A decoder block's call arguments with its hidden states replaced by ``hidden``."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


@dataclass(frozen=True)
class CachePlan:
    """Where cached block inputs live and which are kept.

    ``where``: ``device`` (the model's device) or ``host`` (pinned CPU memory, CUDA models only);
    ``every``: the input of every ``every``-th remaining block is kept (1 = all); ``full_bytes``:
    size of all block inputs of one model; ``planned_bytes``: what this plan holds at most (two
    models' caches while one step's is derived from the previous one); ``budget_bytes``: the
    memory it had to fit in.
    """

    where: str
    every: int
    full_bytes: int
    planned_bytes: int
    budget_bytes: int

    def describe(self) -> str:
        keep = "every block's input" if self.every == 1 else f"1 in {self.every} block inputs (checkpoints)"
        return (f"prefix cache: {keep} on {self.where}, {self.planned_bytes / 2**30:.2f} GiB at most "
                f"(all inputs: {self.full_bytes / 2**30:.2f} GiB x 2; budget {self.budget_bytes / 2**30:.2f} GiB)")

    def checkpoints(self, kept: Sequence[int]) -> list[int]:
        """The blocks of ``kept`` whose inputs are stored (:func:`checkpoint_blocks`)."""
        return checkpoint_blocks(kept, self.every)


def checkpoint_blocks(kept: Sequence[int], every: int) -> list[int]:
    """The blocks of ``kept`` whose inputs a cache keeping 1 in ``every`` stores: every ``every``-th,
    starting with the first."""
    return list(kept[::every])


def free_memory(device: torch.device, devices: Sequence[torch.device] = ()) -> tuple[int, int]:
    """(free bytes on ``device``, available bytes of host RAM), measured now.

    ``devices``: the GPUs of a model split over several (each caches the inputs of its own blocks);
    the device figure is then the least free of them times their number.
    """
    import psutil  # a dependency of accelerate

    host = psutil.virtual_memory().available
    gpus = [d for d in devices if d.type == "cuda"]
    if len(gpus) > 1:
        return len(gpus) * min(torch.cuda.mem_get_info(d)[0] for d in gpus), host
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], host
    return host, host


def pinned_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` (on a GPU) in pinned host memory, copied asynchronously on the current stream."""
    return torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)


def block_device(block: torch.nn.Module) -> torch.device | None:
    """The device of ``block``'s weights (None: it has none, or they are ``meta``)."""
    param = next(block.parameters(), None)
    return param.device if param is not None and param.device.type != "meta" else None


def plan_cache(block_bytes: int, num_blocks: int, device: torch.device, *, fraction: float = 0.5,
               free: tuple[int, int] | None = None) -> CachePlan:
    """Choose where and how densely to cache block inputs, by measured free memory.

    Args:
        block_bytes: bytes of one block's input over the calibration batches one process runs (tokens x
            hidden x dtype; the whole calibration set for a single process).
        num_blocks: blocks of the model.
        device: the model's device.
        fraction: share of free memory the cache may use (the rest is for activations).
        free: (device, host) free bytes; measured with :func:`free_memory` when None (under
            torch.distributed, the least over processes).

    Returns:
        The first plan that fits of: all inputs on the device; all in pinned host memory (CUDA);
        every k-th input on the device, then on the host, for k = 2, 3, ... N. When nothing fits,
        checkpoints only at the first block (every = N) on the device.
    """
    if free is None:     # every process must take the same plan (the same passes follow from it)
        from layershear.engine.distributed import min_across

        free = min_across(free_memory(device), device)
    dev_free, host_free = free
    full = block_bytes * num_blocks
    options = [("device", 1)] + ([("host", 1)] if device.type == "cuda" else [])
    for k in range(2, num_blocks + 1):
        options += [("device", k)] + ([("host", k)] if device.type == "cuda" else [])
    for where, k in options:
        planned = 2 * block_bytes * math.ceil(num_blocks / k)
        budget = int(fraction * (dev_free if where == "device" else host_free))
        if planned <= budget:
            return CachePlan(where, k, full, planned, budget)
    return CachePlan("device", num_blocks, full, 2 * block_bytes, int(fraction * dev_free))


class BlockInputs:
    """Hidden states entering some blocks of one model, per batch: ``states[block_idx][batch_idx]``.

    Each tensor has shape ``[batch_rows, seq_len, hidden_size]`` in the model's dtype, on the
    model's device or in (pinned) host memory per ``where``.
    """

    def __init__(self, removed: frozenset[int], where: str = "device", stored: Sequence[int] = ()) -> None:
        self.removed = removed
        self.where = where
        self.stored = frozenset(stored)     # blocks whose inputs are kept (see CachePlan.checkpoints)
        self.states: dict[int, dict[int, torch.Tensor]] = {k: {} for k in self.stored}
        self.batch = 0   # index of the batch being run; set by the caller before each forward

    def store(self, hidden: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """A copy of ``hidden`` kept where the plan says: pinned host memory (``host``), else on
        ``device`` (the GPU that owns the block, for a model split over GPUs; None = where it is)."""
        hidden = hidden.detach()
        if self.where == "host" and hidden.device.type != "cpu":
            return pinned_copy(hidden)
        return hidden.to(device or hidden.device, copy=True)

    def checkpoint_before(self, block_idx: int) -> int:
        """The latest stored block at or before ``block_idx``."""
        return max(k for k in self.stored if k <= block_idx)

    def shared_with(self, removed: frozenset[int]) -> list[int]:
        """The stored blocks (with states) whose input the model without ``removed`` has too: those at
        or before the first block where ``removed`` and this cache's removed blocks differ (the input
        entering block k depends only on the blocks below k)."""
        differ = removed ^ self.removed
        first = min(differ) if differ else max(self.stored, default=0)
        return [k for k in self.stored if k <= first and self.states.get(k)]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self.states.values() for t in ts.values())


@contextmanager
def capturing(model, kept: list[int], cache: BlockInputs, store: set[int] | None = None) -> Iterator[None]:
    """Inside ``remove_blocks`` that left the blocks ``kept``, record the input of those in ``store`` (default all)."""
    handles = []
    for module, block_idx in zip(decoder_blocks(model), kept):
        if store is not None and block_idx not in store:
            continue

        def hook(block, args, kwargs, block_idx=block_idx):
            cache.states.setdefault(block_idx, {})[cache.batch] = cache.store(hidden_of(args, kwargs), block_device(block))
        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def injecting(model, cache: BlockInputs, block_idx: int, *, bypass: bool = False) -> Iterator[None]:
    """Feed the cached input of ``block_idx`` to the model's first block, batch by batch.

    Use inside ``remove_blocks`` that removed every block before the first one run. With ``bypass``
    the first block's output is replaced by that cached state too: the model then computes f without
    ``block_idx`` when ``block_idx`` was its last block (only the final norm and LM head follow).
    """
    first = decoder_blocks(model)[0]
    device = block_device(first) or next(model.parameters()).device

    def cached() -> torch.Tensor:
        state = cache.states[block_idx][cache.batch]
        return state.to(device, non_blocking=True) if state.device != device else state

    def pre_hook(_module, args, kwargs):
        state = cached()
        if hidden_of(args, kwargs).shape != state.shape:
            raise RuntimeError("cached block input does not match the batch being run")  # a layershear bug
        return with_hidden(args, kwargs, state)

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
