"""Candidate stacking: the candidates of one greedy step share each forward pass.

With cached-prefix skipping (:mod:`layershear.engine.prefix_cache`) candidate f_-l runs the current
model's blocks after l from a cached hidden state. Run one candidate at a time and every pass holds
one calibration batch, a few thousand tokens: too few to keep a GPU's matrix units busy. All
candidates of a step run the same blocks, each from its own starting block on. So one forward of the
current model serves several of them: a candidate's state joins the stack (the batch dimension) in
front of the first block it runs, the batch-sized inputs of each block (attention mask, position
embeddings, position ids) are repeated once per stacked candidate, and the LM head splits the rows
back by candidate. Each row sees the same blocks, masks and positions as in its own forward, so the
numbers are the same up to the floating-point rounding of a larger matmul; the FLOPs are the same
too (stacking adds no block-tokens), only the passes are larger.

A candidate whose removed block was the current model's last block joins after the last block
(only the final norm and LM head follow). States that step reuse (:mod:`layershear.engine.step_reuse`)
stores are cut out of the stack at the blocks they enter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from layershear.engine.prefix_cache import BlockInputs, hidden_of, with_hidden
from layershear.model.arch import decoder_blocks


@dataclass
class StackMember:
    """One candidate in a stacked forward.

    ``first``: original index of the first block it runs (None: it joins after the last block);
    ``state(batch_idx)``: its hidden state entering ``first`` (or leaving the last block), shape
    ``[rows, seq_len, hidden]`` for that calibration batch; ``capture``: where to store its inputs of
    the blocks ``capture.stored`` (step reuse), or None.
    """

    first: int | None
    state: Callable[[int], torch.Tensor]
    capture: BlockInputs | None = None
    order: int = field(default=-1, init=False)     # its row group in the stack of the current pass


def _repeat(value, rows: int, copies: int, memo: dict):
    """``value`` with every batch-major tensor (leading dim ``rows``, 2-D or more) repeated ``copies``
    times along dim 0; tuples, lists and dicts are walked. ``memo`` keeps the latest repeat of each
    tensor, so blocks with the same stack share it."""
    if isinstance(value, torch.Tensor):
        if copies == 1 or value.ndim < 2 or value.shape[0] != rows:
            return value
        held = memo.get(id(value))
        if held is None or held[1] != copies:   # the stack only grows: an older repeat is not needed again
            held = memo[id(value)] = (value, copies, value.repeat(copies, *([1] * (value.ndim - 1))))  # holds value
        return held[2]
    if isinstance(value, tuple | list):
        return type(value)(_repeat(v, rows, copies, memo) for v in value)
    if isinstance(value, dict):
        return {k: _repeat(v, rows, copies, memo) for k, v in value.items()}
    return value


@dataclass
class StackPass:
    """State of one stacked forward: the batch being run and the members in stack order."""

    batch: int = 0
    order: list[StackMember] = field(default_factory=list)
    rows: int = 0
    memo: dict = field(default_factory=dict)

    def reset(self, batch: int) -> None:
        self.batch, self.order, self.rows, self.memo = batch, [], 0, {}


@contextmanager
def stacking(model, kept: Sequence[int], members: Sequence[StackMember]) -> Iterator[StackPass]:
    """Inside ``remove_blocks`` that left the blocks ``kept`` (original indices, in order), stack
    ``members`` along the batch dimension; call ``reset(batch_idx)`` on the yielded
    :class:`StackPass` before each forward. After the forward, rows ``[i * rows, (i + 1) * rows)``
    of the final hidden states belong to ``stack.order[i]``.

    Raises:
        ValueError: no member starts at the first kept block (its input would be the embeddings).
    """
    if not any(m.first == kept[0] for m in members):
        raise ValueError("stacking: no member runs the first kept block")     # a layershear bug
    stack = StackPass()
    device = next(model.parameters()).device
    modules = decoder_blocks(model)

    def join(parts: list[torch.Tensor], new: list[StackMember]) -> torch.Tensor:
        for m in new:
            state = m.state(stack.batch)
            parts.append(state.to(device, non_blocking=True) if state.device != device else state)
            m.order = len(stack.order)
            stack.order.append(m)
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def pre_hook(_module, args, kwargs, block_idx):
        hidden = hidden_of(args, kwargs)
        if not stack.order:                       # the embeddings: replaced by the first members' states
            stack.rows = hidden.shape[0]
            parts = []
        else:
            parts = [hidden]
        hidden = join(parts, [m for m in members if m.first == block_idx])
        for m in stack.order:
            if m.capture is not None and block_idx in m.capture.stored:
                rows = hidden[m.order * stack.rows:(m.order + 1) * stack.rows]
                m.capture.states.setdefault(block_idx, {})[stack.batch] = m.capture.store(rows)
        copies = hidden.shape[0] // stack.rows
        args, kwargs = with_hidden(args, kwargs, hidden)
        args = (args[0], *_repeat(args[1:], stack.rows, copies, stack.memo)) if args else args
        return args, {k: v if k == "hidden_states" else _repeat(v, stack.rows, copies, stack.memo)
                      for k, v in kwargs.items()}

    def post_hook(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = join([hidden], [m for m in members if m.first is None])
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handles = [module.register_forward_pre_hook(lambda m, a, k, idx=idx: pre_hook(m, a, k, idx), with_kwargs=True)
               for module, idx in zip(modules, kept)]
    if any(m.first is None for m in members):
        handles.append(modules[len(kept) - 1].register_forward_hook(post_hook))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def stack_groups(candidates: Sequence[int], tokens_per_candidate: int, stack_tokens: int,
                 min_groups: int = 1) -> list[list[int]]:
    """Split ``candidates`` (in run order) into consecutive groups of about equal size, each holding
    at most ``stack_tokens`` tokens per pass (at least one candidate) and at least ``min_groups``
    groups where there are enough candidates."""
    n = len(candidates)
    if n == 0:
        return []
    per = max(1, stack_tokens // max(1, tokens_per_candidate))
    groups = min(n, max(min_groups, -(-n // per)))
    base, extra = divmod(n, groups)
    out, start = [], 0
    for g in range(groups):           # sizes differ by at most one, larger groups first
        size = base + (g < extra)
        out.append(list(candidates[start:start + size]))
        start += size
    return out
