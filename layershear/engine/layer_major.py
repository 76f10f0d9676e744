"""Layer-major execution: every model of a job goes through block k before any goes through block k + 1.

The in-memory engine runs one calibration batch through all blocks of one candidate (or a stack of
candidates) at a time, so every block's weights must stay on the device. For a model that does not
fit, the loop is turned inside out: block k's weights come to the device once
(:class:`layershear.model.streaming.BlockStreamer`), the hidden states of every model and every
batch that runs block k go through it, and it is released before block k + 1 is used.

The models are sets of removed blocks. They share their computation as far as their removals
agree: all start in one *lane* holding the embeddings of every batch; at block k a lane whose
models disagree on k forks (the models without k keep the state entering k, no copy), and a lane
whose models keep k runs it. A candidate f without b of a greedy step therefore shares f's states
up to b, as with the prefix cache (:mod:`layershear.engine.prefix_cache`), without caching them.

Blocks are called with exactly the arguments the model's own forward gives them (attention masks,
position embeddings, position ids), recorded per batch by stand-ins that take the blocks' places
during the forward (:class:`Tape`); the final norm, the LM head and the scored positions then come
from the model's own forward too, so every architecture the engine supports computes the same
numbers in this order as in the usual one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from layershear.engine.prefix_cache import hidden_of
from layershear.model.arch import decoder_blocks
from layershear.model.streaming import BlockStreamer


class _Recorded(Exception):
    """Raised by the last stand-in while recording: the forward need not go on to the LM head."""


class Tape:
    """What the stand-ins of a model's blocks record and replay, per calibration batch.

    ``inputs[batch]``: the hidden states entering block 0 (the embeddings), ``[rows, seq, hidden]``;
    ``calls[batch][block]``: the arguments block ``block`` is called with besides its hidden states;
    ``final``: in replay, the states the last block hands to the final norm (``copies`` stacked
    models: ``[copies x rows, seq, hidden]``).
    """

    def __init__(self) -> None:
        self.batch = 0
        self.replaying = False
        self.inputs: dict[int, torch.Tensor] = {}
        self.calls: dict[int, dict[int, tuple[tuple, dict]]] = {}
        self.final: torch.Tensor | None = None

    def record(self, batch: int, forward: Callable[[], object]) -> None:
        """Run ``forward`` (the model's forward on batch ``batch``) only as far as the last block,
        recording the embeddings and every block's call arguments."""
        self.batch, self.replaying = batch, False
        self.calls[batch] = {}
        try:
            forward()
        except _Recorded:
            return
        raise RuntimeError("layer-major tape: the forward never reached the last block")   # a layershear bug

    def replay(self, batch: int, final: torch.Tensor, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Run ``forward`` (the model's forward and scoring on batch ``batch``) with ``final`` as the
        last block's output; returns what ``forward`` returns."""
        self.batch, self.replaying, self.final = batch, True, final
        try:
            return forward()
        finally:
            self.final = None

    def forget(self) -> None:
        """Drop every recorded batch."""
        self.inputs.clear()
        self.calls.clear()


class _StandIn(torch.nn.Module):
    """Takes block ``index``'s place in the block list; attribute look-ups fall through to the block."""

    def __init__(self, block: torch.nn.Module, index: int, last: int, tape: Tape) -> None:
        super().__init__()
        object.__setattr__(self, "_block", block)     # not a submodule: its parameters stay out of the model's
        self.index, self.last, self.tape = index, last, tape

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_block"), name)

    def forward(self, *args, **kwargs):
        tape, hidden = self.tape, hidden_of(args, kwargs)
        if tape.replaying:
            return tape.final if self.index == self.last else hidden
        if self.index == 0:
            tape.inputs[tape.batch] = hidden
        tape.calls[tape.batch][self.index] = (tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "hidden_states"})
        if self.index == self.last:
            raise _Recorded
        return hidden


@contextmanager
def standing_in(model, tape: Tape) -> Iterator[list[torch.nn.Module]]:
    """Put stand-ins recording to / replaying from ``tape`` in the places of ``model``'s blocks;
    yields the blocks themselves (original order). Restored on exit, also on error."""
    blocks = decoder_blocks(model)
    originals = list(blocks)
    for i, block in enumerate(originals):
        blocks[i] = _StandIn(block, i, len(originals) - 1, tape)
    try:
        yield originals
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block


@dataclass
class Lane:
    """Models that agree on every block so far, and their hidden states entering the next block, per batch."""

    sets: list[frozenset[int]]
    states: dict[int, torch.Tensor]


def run_layer_major(streamer: BlockStreamer, tape: Tape, sets: Sequence[frozenset[int]], batches: Sequence[int], *,
                    num_blocks: int, keep: Callable[[torch.Tensor], torch.Tensor],
                    on_run: Callable[[int], None] | None = None,
                    on_block: Callable[[int, int], None] | None = None) -> dict[frozenset[int], dict[int, torch.Tensor]]:
    """The hidden states leaving the last block of each model without ``sets[i]``, per batch of
    ``batches`` (whose embeddings and block arguments ``tape`` recorded), computed block by block.

    Args:
        streamer: brings each block's weights to the device; a block no model runs is never loaded.
        tape: the recorded batches.
        sets: distinct sets of removed blocks (at least one block of the model is kept by each).
        batches: batch indices.
        num_blocks: blocks of the model.
        keep: where a state waits for its next block (``t`` itself on the device, a host copy, or a
            memory-mapped copy on disk);
            states are moved to the block's device before it runs.
        on_run: called with the batch index after every (lane, block, batch) forward (work counting).
        on_block: called as ``on_block(done, total)`` after every block.

    Returns:
        removed set -> batch -> ``[rows, seq, hidden]`` final states (where ``keep`` put them).
    """
    lanes = [Lane(list(sets), {j: keep(tape.inputs[j]) for j in batches})]
    needed = [k for k in range(num_blocks) if any(k not in s for s in sets)]
    device = streamer.device
    for i, k in enumerate(needed):
        for lane in list(lanes):
            skip = [s for s in lane.sets if k in s]
            if skip and len(skip) < len(lane.sets):       # fork: those without k keep the state entering k
                lanes.append(Lane(skip, dict(lane.states)))
                lane.sets = [s for s in lane.sets if k not in s]
        block = streamer.load(k, then=needed[i + 1] if i + 1 < len(needed) else None)
        for lane in lanes:
            if k in lane.sets[0]:
                continue
            for j in batches:
                args, kwargs = tape.calls[j][k]
                out = block(lane.states[j].to(device, non_blocking=True), *args, **kwargs)
                lane.states[j] = keep(out[0] if isinstance(out, tuple) else out)
                if on_run is not None:
                    on_run(j)
        streamer.release(k)
        if on_block is not None:
            on_block(i + 1, len(needed))
    return {s: lane.states for lane in lanes for s in lane.sets}
