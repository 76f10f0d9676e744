"""One forward pass and the log-probabilities of the scored positions (lm-eval's computation).

Reproduces lm-evaluation-harness ``HFLM._loglikelihood_tokens`` for causal LMs
(lm_eval/models/huggingface.py): inputs are left-truncated to ``max_length + 1`` tokens, and the
score of a request is the sum of its continuation tokens' log-probabilities. In lm-eval's layout
(:func:`batch_loglikelihoods`) padding is on the right, so no attention mask is needed and padded
positions cannot influence real ones; the LM head runs only on the positions that are scored.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from layershear.engine.requests import EncodedRequest


class InFlight:
    """Per-batch results read back to the host only once ``depth`` later batches are queued behind them.

    Reading a result back to the host waits for its batch to finish. Reading each batch's before
    queuing the next keeps one GPU busy at a time: with a model split over G GPUs, batch j + 1
    could run on GPU 0 while batch j runs on GPU 1. With ``depth`` >= G the host queues up to
    ``depth`` batches ahead (the calibration batches are the pipeline's micro-batches), and on one
    GPU the host prepares the next batch while the current one computes. On the CPU it changes
    nothing. The numbers are the same whatever ``depth``.

    Args:
        out: the CPU tensor the results are written into, ``out[index] = result``.
        depth: batches queued at most before the oldest one is read back (1 = read each at once).
    """

    def __init__(self, out: torch.Tensor, depth: int) -> None:
        self.out, self.depth = out, max(1, depth)
        self.queue: deque[tuple[object, torch.Tensor]] = deque()

    def put(self, index, result: torch.Tensor) -> None:
        """Queue ``result`` (any device) for ``out[index]``; reads back the oldest beyond ``depth``."""
        self.queue.append((index, result))
        while len(self.queue) > self.depth:
            self._read()

    def drain(self) -> torch.Tensor:
        """Read back every queued result (waits for the device); returns ``out``."""
        while self.queue:
            self._read()
        return self.out

    def _read(self) -> None:
        index, result = self.queue.popleft()
        self.out[index] = result.cpu()


def model_devices(model) -> list[torch.device]:
    """The devices ``model``'s weights are on (several: split over GPUs), ``meta`` tensors of a
    streamed model aside."""
    return sorted({p.device for p in model.parameters() if p.device.type != "meta"}, key=str)


def pipeline_depth(model) -> int:
    """Batches :class:`InFlight` queues for ``model``: one more than the devices its weights are on."""
    return len(model_devices(model)) + 1


def _batch_tensors(batch: Sequence[EncodedRequest], max_length: int, pad_id: int):
    rows, spans = [], []
    for req in batch:
        inp, first, targets = req.truncated(max_length)
        rows.append(inp)
        spans.append((first, len(inp), targets))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for r, inp in enumerate(rows):
        input_ids[r, :len(inp)] = torch.tensor(inp, dtype=torch.long)
    return input_ids, spans


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (a CPU tensor) on ``device``, without making the host wait for the device.

    A plain ``.to("cuda")`` from pageable memory synchronizes the device's stream, so the host would
    wait for every kernel already queued there; through pinned memory the copy is asynchronous
    (PyTorch's caching host allocator keeps the pinned buffer until the copy has run). Elsewhere
    (CPU, or ``t`` already there) it is ``t.to(device)``.
    """
    if device.type != "cuda" or t.device == device:
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


@contextmanager
def _gather_before_head(model, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[None]:
    """Feed the LM head only hidden states ``[rows, cols]`` (as one ``[1, P, hidden]`` row).

    ``rows`` and ``cols`` are CPU tensors; they are copied to the device of the states the head
    receives (the last GPU of a model split over several), once per device."""
    placed: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(_module, args):
        hidden = args[0]
        if hidden.device not in placed:
            placed[hidden.device] = (to_device(rows, hidden.device), to_device(cols, hidden.device))
        r, c = placed[hidden.device]
        return (hidden[r, c].unsqueeze(0), *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor, *, index: torch.Tensor | None = None,
                    chunk_elements: int = 1 << 26) -> torch.Tensor:
    """``log_softmax(logits.float())[index[k], targets[k]]`` (lm-eval's score of one token), in row chunks;
    a *greedy* target (:func:`layershear.engine.requests.greedy_target`, negative) gives instead 1.0
    if its token is the row's top-1 prediction (``argmax``, first index on ties, as lm-eval's
    ``is_greedy``), else 0.0.

    Rows are taken ``chunk_elements // vocab`` at a time, so at most about ``chunk_elements`` fp32
    values of each of the upcast logits and their log-softmax (256 MiB by default) exist besides
    ``logits``, where one fp32 log-softmax over all ``[R, vocab]`` would hold two more copies of the
    logits. The log-softmax is row-wise, so the result is the unchunked one exactly.

    Args:
        logits: ``[R, vocab]`` LM-head output, any float dtype.
        targets: ``[P]`` int64 token ids (or greedy targets), on the CPU.
        index: ``[P]`` row of ``logits`` scoring each target, on the CPU; None = row k scores target k (P = R).
        (Which targets fall in each chunk of rows is worked out on the CPU, so nothing is read back
        from the device; ``targets`` or ``index`` on a device are first copied to the CPU, which waits.)

    Returns:
        float32 ``[P]`` log-probabilities (natural-log units) or 0/1 top-1 hits, on ``logits.device``.
    """
    device = logits.device
    targets = targets.cpu()
    index = torch.arange(logits.shape[0]) if index is None else index.cpu()
    greedy = targets < 0
    tokens = torch.where(greedy, ~targets, targets)
    step = max(1, chunk_elements // max(1, logits.shape[-1]))
    out = torch.empty(targets.shape[0], dtype=torch.float32, device=device)
    for start in range(0, logits.shape[0], step):
        where = ((index >= start) & (index < start + step)).nonzero()[:, 0]
        if not where.numel():
            continue
        part = torch.log_softmax(logits[start:start + step].float(), dim=-1)
        local, picked = to_device(index[where] - start, device), to_device(tokens[where], device)
        values = part[local, picked]
        if bool(greedy[where].any()):
            hit = (part.argmax(dim=-1)[local] == picked).float()
            values = torch.where(to_device(greedy[where], device), hit, values)
        out[to_device(where, device)] = values
    return out


def score_positions(model, input_ids: torch.Tensor, *, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor,
                    owners: torch.Tensor, num_out: int, full_logits: bool = False, copies: int = 1,
                    to_host: bool = True, **forward_kwargs) -> torch.Tensor:
    """One forward pass; log-probability of ``targets[k]`` at hidden state ``[rows[k], cols[k]]``
    (or its top-1 hit, for a greedy target), summed per ``owners[k]``.

    ``full_logits`` computes the LM head at every position, as lm-eval does (the reference engine).
    Otherwise only the scored positions go through the LM head: the model keeps the positions from
    the first scored one on (``logits_to_keep``, a view), and a pre-hook on the LM head gathers
    exactly the scored (row, position) pairs, so padding and context positions never reach the head
    or the log-softmax. A position scored by several requests (a text token's log-probability and
    its top-1 hit) goes through the head and the log-softmax once. ``forward_kwargs`` go to the
    model (``attention_mask``, ``position_ids``). ``copies`` > 1: the blocks return that many
    stacked copies of the batch's rows (:mod:`layershear.engine.stacking`), each scored on its own.

    ``rows``, ``cols``, ``targets`` and ``owners`` are ``[P]`` int64 CPU tensors: every index is
    worked out on the CPU and copied to the device asynchronously (:func:`to_device`), so the pass
    reads nothing back from the device. With ``to_host=False`` the result stays on the LM head's
    device, unsynchronized: the caller can queue the next batches first (a model split over GPUs
    then computes several batches at once, one per GPU, as a pipeline).

    Returns:
        float64 tensor of shape ``[num_out]`` (``[copies, num_out]`` when ``copies`` > 1; natural-log
        units), on CPU (``to_host=False``: on the LM head's device).
    """
    rows, cols, targets, owners = rows.cpu(), cols.cpu(), targets.cpu(), owners.cpu()
    width = input_ids.shape[1]
    if copies > 1:
        shift = torch.arange(copies)[:, None]
        rows = (rows[None] + shift * input_ids.shape[0]).reshape(-1)
        owners = (owners[None] + shift * num_out).reshape(-1)
        cols, targets = cols.repeat(copies), targets.repeat(copies)
    index = None
    key = rows * width + cols
    unique, inverse = torch.unique(key, return_inverse=True)
    if unique.numel() < key.numel():                   # shared positions: each through the head once
        rows, cols, index = unique // width, unique % width, inverse
    first = 0 if full_logits else int(cols.min())
    gather = contextlib.nullcontext() if full_logits else _gather_before_head(model, rows, cols - first)
    with gather:      # logits_to_keep = n keeps the last n positions; 0 keeps all
        logits = model(input_ids=input_ids, logits_to_keep=width - first, use_cache=False, **forward_kwargs).logits
    device = logits.device
    picked = logits[to_device(rows, device), to_device(cols, device)] if full_logits else logits[0]
    scores = target_logprobs(picked, targets, index=index).double()
    out = torch.zeros(num_out * copies, dtype=torch.float64, device=device).index_add_(0, to_device(owners, device), scores)
    out = out.view(copies, num_out) if copies > 1 else out
    return out.cpu() if to_host else out


@torch.inference_mode()
def batch_loglikelihoods(model, batch: Sequence[EncodedRequest], *, max_length: int, pad_id: int,
                         full_logits: bool = False, to_host: bool = True) -> torch.Tensor:
    """Summed continuation log-probabilities of one batch, one right-padded row per request
    (lm-eval's layout; see :func:`score_positions` for ``full_logits`` and ``to_host``).

    Returns:
        float64 tensor of shape ``[len(batch)]`` (natural-log units), on CPU (``to_host=False``: on
        the LM head's device).
    """
    device = next(model.parameters()).device
    input_ids, spans = _batch_tensors(batch, max_length, pad_id)
    rows = torch.cat([torch.full((e - s,), r) for r, (s, e, _) in enumerate(spans)])
    cols = torch.cat([torch.arange(s, e) for s, e, _ in spans])
    targets = torch.tensor([t for _, _, tgt in spans for t in tgt], dtype=torch.long)
    return score_positions(model, to_device(input_ids, device), rows=rows, cols=cols, targets=targets, owners=rows,
                           num_out=len(batch), full_logits=full_logits, to_host=to_host)
