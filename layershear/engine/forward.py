"""One forward pass and the log-probabilities of the scored positions (lm-eval's computation).

Reproduces lm-evaluation-harness ``HFLM._loglikelihood_tokens`` for causal LMs
(lm_eval/models/huggingface.py): inputs are left-truncated to ``max_length + 1`` tokens, and the
score of a request is the sum of its continuation tokens' log-probabilities. In lm-eval's layout
(:func:`batch_loglikelihoods`) padding is on the right, so no attention mask is needed and padded
positions cannot influence real ones; the LM head runs only on the positions that are scored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from layershear.engine.requests import EncodedRequest


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


@contextmanager
def _gather_before_head(model, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[None]:
    """Feed the LM head only hidden states ``[rows, cols]`` (as one ``[1, P, hidden]`` row)."""
    def hook(_module, args):
        return (args[0][rows, cols].unsqueeze(0), *args[1:])

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
        targets: ``[P]`` int64 token ids (or greedy targets).
        index: ``[P]`` row of ``logits`` scoring each target; None = row k scores target k (P = R).

    Returns:
        float32 ``[P]`` log-probabilities (natural-log units) or 0/1 top-1 hits, on ``logits.device``.
    """
    greedy = targets < 0
    tokens = torch.where(greedy, ~targets, targets)
    index = torch.arange(logits.shape[0], device=logits.device) if index is None else index
    step = max(1, chunk_elements // max(1, logits.shape[-1]))
    out = torch.empty(targets.shape[0], dtype=torch.float32, device=logits.device)
    for start in range(0, logits.shape[0], step):
        part = torch.log_softmax(logits[start:start + step].float(), dim=-1)
        where = ((index >= start) & (index < start + step)).nonzero()[:, 0]
        local = index[where] - start
        values = part[local, tokens[where]]
        if bool(greedy[where].any()):
            hit = (part.argmax(dim=-1)[local] == tokens[where]).float()
            values = torch.where(greedy[where], hit, values)
        out[where] = values
    return out


def score_positions(model, input_ids: torch.Tensor, *, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor,
                    owners: torch.Tensor, num_out: int, full_logits: bool = False, copies: int = 1,
                    **forward_kwargs) -> torch.Tensor:
    """One forward pass; log-probability of ``targets[k]`` at hidden state ``[rows[k], cols[k]]``
    (or its top-1 hit, for a greedy target), summed per ``owners[k]``.

    ``full_logits`` computes the LM head at every position, as lm-eval does (the reference engine).
    Otherwise only the scored positions go through the LM head: the model keeps the window of
    positions that holds them (``logits_to_keep``), and a pre-hook on the LM head gathers exactly
    the scored (row, position) pairs, so padding and context positions never reach the head or the
    log-softmax. A position scored by several requests (a text token's log-probability and its
    top-1 hit) goes through the head and the log-softmax once. ``forward_kwargs`` go to the model
    (``attention_mask``, ``position_ids``). ``copies`` > 1: the blocks return that many stacked
    copies of the batch's rows (:mod:`layershear.engine.stacking`), each scored on its own.

    Returns:
        float64 tensor of shape ``[num_out]`` (``[copies, num_out]`` when ``copies`` > 1; natural-log
        units), on CPU.
    """
    device = input_ids.device
    if copies > 1:
        shift = torch.arange(copies, device=device)[:, None]
        rows = (rows[None] + shift * input_ids.shape[0]).reshape(-1)
        owners = (owners[None] + shift * num_out).reshape(-1)
        cols, targets = cols.repeat(copies), targets.repeat(copies)
    index = None
    key = rows * input_ids.shape[1] + cols
    unique, inverse = torch.unique(key, return_inverse=True)
    if unique.numel() < key.numel():                   # shared positions: each through the head once
        rows, cols, index = unique // input_ids.shape[1], unique % input_ids.shape[1], inverse
    first = 0 if full_logits else int(cols.min())
    last = input_ids.shape[1] if full_logits else int(cols.max()) + 1
    gather = contextlib.nullcontext() if full_logits else _gather_before_head(model, rows, cols - first)
    with gather:
        logits = model(input_ids=input_ids, logits_to_keep=torch.arange(first, last, device=device),
                       use_cache=False, **forward_kwargs).logits
    picked = logits[rows, cols] if full_logits else logits[0]
    scores = target_logprobs(picked, targets, index=index).double()
    out = torch.zeros(num_out * copies, dtype=torch.float64, device=device).index_add_(0, owners, scores).cpu()
    return out.view(copies, num_out) if copies > 1 else out


@torch.inference_mode()
def batch_loglikelihoods(model, batch: Sequence[EncodedRequest], *, max_length: int, pad_id: int,
                         full_logits: bool = False) -> torch.Tensor:
    """Summed continuation log-probabilities of one batch, one right-padded row per request
    (lm-eval's layout; see :func:`score_positions` for ``full_logits``).

    Returns:
        float64 tensor of shape ``[len(batch)]`` (natural-log units), on CPU.
    """
    device = next(model.parameters()).device
    input_ids, spans = _batch_tensors(batch, max_length, pad_id)
    rows = torch.cat([torch.full((e - s,), r) for r, (s, e, _) in enumerate(spans)]).to(device)
    cols = torch.cat([torch.arange(s, e) for s, e, _ in spans]).to(device)
    targets = torch.tensor([t for _, _, tgt in spans for t in tgt], dtype=torch.long, device=device)
    return score_positions(model, input_ids.to(device), rows=rows, cols=cols, targets=targets, owners=rows,
                           num_out=len(batch), full_logits=full_logits)
