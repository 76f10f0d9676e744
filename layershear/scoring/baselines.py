"""Block importance from the literature, on calibration text: ShortGPT BI, angular distance, perplexity, Taylor.

These are the baselines that accuracy-based relevance (``layershear.scoring.scorer``) is compared against. Each
function returns ``{original block index: score}`` for the blocks still in the model once the blocks in
``removed`` are taken out, and for every metric a HIGHER score means a MORE important block (remove the lowest first).

Text is tokenised as lm-eval does (``add_special_tokens=False``, nothing prepended), left-truncated to
``max_length`` tokens and right-padded with an ``attention_mask``; every average is over real tokens only
(token-weighted, not per text).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from layershear.data.benchmarks.base import MCItem
from layershear.errors import LayershearError, ScoringError
from layershear.model.arch import decoder_blocks
from layershear.model.layer_config import kept_blocks
from layershear.model.surgery import remove_blocks

_Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(a, b) -> d``: ``a``, ``b`` of shape ``(batch, seq, hidden)``; ``d`` of shape ``(batch, seq)``, float32."""
_Visit = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class _Batch:
    input_ids: torch.Tensor  # (batch, seq) int64, right-padded, on the model's device
    attention_mask: torch.Tensor  # (batch, seq) int64, 1 = real token


def calibration_texts(items: Sequence) -> list[str]:
    """Return one calibration text per document: a multiple-choice document's gold context followed
    by its gold continuation, a text document's text, a generative document's prompt and gold answer.

    Args:
        items: :class:`MCItem` (``contexts[gold] + continuations[gold]``), ``TextDoc`` (``text``) or
            GSM8K's ``GenItem`` (``context + " " + target``).

    Returns:
        ``len(items)`` strings, in order.
    """
    out = []
    for item in items:
        if isinstance(item, MCItem):
            out.append(item.contexts[item.gold] + item.continuations[item.gold])
        else:
            out.append(item.text if hasattr(item, "text") else item.context + " " + item.target)
    return out


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per non-empty text, left-truncated to ``max_length``; ScoringError when nothing is left."""
    if isinstance(texts, str):
        raise ScoringError("texts is one string; pass a list of strings, e.g. calibration_texts(items)")
    if not texts:
        raise ScoringError("no calibration texts given; pass at least one non-empty string, e.g. calibration_texts(items)")
    if max_length < 1:
        raise ScoringError(f"max_length={max_length}; it must be at least 1 token")
    ids = [list(row)[-max_length:] for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    ids = [row for row in ids if row]
    if not ids:
        raise ScoringError(f"all {len(texts)} calibration texts tokenise to no tokens; pass non-empty texts")
    return ids


@torch.inference_mode(False)  # taylor_scores saves the ids for backward, even when called under inference_mode
def _batches(model: PreTrainedModel, tokenizer: Any, texts: Sequence[str], batch_size: int, max_length: int) -> list[_Batch]:
    """Tokenise ``texts`` and group them, longest first, into right-padded batches on the model's device."""
    if batch_size < 1:
        raise ScoringError(f"batch_size={batch_size}; it must be at least 1")
    ids = sorted(_encode(tokenizer, texts, max_length), key=len, reverse=True)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = 0 if pad_id is None else int(pad_id)
    device = next(model.parameters()).device
    batches = []
    for start in range(0, len(ids), batch_size):
        rows = ids[start : start + batch_size]
        width = len(rows[0])
        input_ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long, device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long, device=device)
        batches.append(_Batch(input_ids, mask))
    return batches


def _forward(model: PreTrainedModel, batch: _Batch) -> Any:
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)


def _keep(model: PreTrainedModel, removed: Collection[int]) -> list[int]:
    return kept_blocks(removed, len(decoder_blocks(model)), error=LayershearError)


@contextmanager
def _watch_blocks(model: PreTrainedModel, removed: Collection[int], visit: _Visit) -> Iterator[list[int]]:
    """Inside ``remove_blocks(model, removed)``, call ``visit(position, block_input, block_output)`` after each block runs.

    Yields the original indices of the remaining blocks (``keep[position]``). Hooks are removed on exit.
    """
    keep = _keep(model, removed)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    with remove_blocks(model, removed):
        try:
            for position, block in enumerate(decoder_blocks(model)):
                entering: list[torch.Tensor] = []

                def pre_hook(_m: Any, args: tuple, kwargs: dict, entering: list = entering) -> None:
                    entering.append(args[0] if args else kwargs["hidden_states"])

                def post_hook(_m: Any, _args: Any, output: Any, entering: list = entering, position: int = position) -> None:
                    visit(position, entering.pop(), output[0] if isinstance(output, (tuple, list)) else output)

                handles.append(block.register_forward_pre_hook(pre_hook, with_kwargs=True))
                handles.append(block.register_forward_hook(post_hook))
            yield keep
        finally:
            for handle in handles:
                handle.remove()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def _one_minus_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - (_unit(a) * _unit(b)).sum(-1)


def _angle_over_pi(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # arccos(cos) loses ~3e-4 rad next to cos = 1 in float32; 2 atan2(|u - v|, |u + v|) is the same angle, exact there.
    u, v = _unit(a), _unit(b)
    return 2.0 * torch.atan2((u - v).norm(dim=-1), (u + v).norm(dim=-1)) / math.pi


@torch.inference_mode()
def _span_scores(model: PreTrainedModel, batches: list[_Batch], *, n: int, distance: _Distance, removed: Collection[int]) -> dict[int, float]:
    """Token-weighted mean of ``distance(input of block l, output of block l+n-1)`` for every block l with l+n <= count."""
    open_spans: dict[int, torch.Tensor] = {}  # position -> input of a block whose span has not closed yet
    sums: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}

    def visit(position: int, x_in: torch.Tensor, x_out: torch.Tensor) -> None:
        open_spans[position] = x_in
        start = position - n + 1
        if start >= 0:
            d = distance(open_spans.pop(start), x_out)[state["mask"]].double().sum()
            sums[start] = sums[start] + d if start in sums else d

    with _watch_blocks(model, removed, visit) as keep:
        if not 1 <= n <= len(keep):
            raise ScoringError(f"n={n} blocks per span, but {len(keep)} blocks remain; pass 1 <= n <= {len(keep)}")
        tokens = 0
        for batch in batches:
            state["mask"] = batch.attention_mask.bool()
            tokens += int(batch.attention_mask.sum())
            _forward(model, batch)
            open_spans.clear()
    return {keep[start]: float(total) / tokens for start, total in sorted(sums.items())}


def cosine_scores(
    model: PreTrainedModel, tokenizer: Any, texts: Sequence[str], *, removed: Collection[int] = (), batch_size: int = 8, max_length: int = 2048
) -> dict[int, float]:
    """ShortGPT Block Influence: one minus the mean cosine similarity of each block's input and output.

    Men et al. 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than You Expect"
    (arXiv 2403.03853), Eq. 1: ``BI_l = 1 - E_{X,t}[cos(x_{l,t}, x_{l+1,t})]``, with ``x_l`` the hidden state
    entering block ``l`` and ``x_{l+1}`` the one leaving it (before any final norm). Cosines are computed in
    float32 over the hidden dimension and averaged over every real token of every text.

    Args:
        model: A supported causal LM, on its own device and dtype; run as is (eval mode expected).
        tokenizer: Callable as ``tokenizer(texts, add_special_tokens=False)["input_ids"]``; ``pad_token_id``
            (``None`` -> 0) pads batches.
        texts: Calibration texts, e.g. ``calibration_texts(items)``.
        removed: Original indices of blocks removed (in memory) before scoring.
        batch_size: Texts per forward pass.
        max_length: Longer texts keep their last ``max_length`` tokens.

    Returns:
        ``{original block index: BI}`` for each remaining block; BI is unitless, in ``[0, 2]``, 0 for a block
        whose output equals its input.

    Raises:
        ScoringError: ``texts`` is empty or tokenises to nothing, or ``batch_size``/``max_length`` < 1.
        LayershearError: ``removed`` is out of range or removes every block.
    """
    batches = _batches(model, tokenizer, texts, batch_size, max_length)
    return _span_scores(model, batches, n=1, distance=_one_minus_cos, removed=removed)


def angular_scores(
    model: PreTrainedModel,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    n: int = 1,
    removed: Collection[int] = (),
    batch_size: int = 8,
    max_length: int = 2048,
) -> dict[int, float]:
    """Angular distance between the input of block ``l`` and the input of block ``l+n`` (Gromov et al.).

    Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers" (arXiv 2403.17887), Eq. 7:
    ``d(x_l, x_{l+n}) = arccos(cos(x_l, x_{l+n})) / pi``. ``x_{l+n}`` is taken as the output of block
    ``l+n-1``, which is the input of block ``l+n``, and for ``l+n`` = the number of remaining blocks the output
    of the last block, before the final norm. The paper evaluates the final token of each sequence; here the
    distance is averaged over every real token of every text, like ``cosine_scores``. Computed in float32 as
    ``2 atan2(|u - v|, |u + v|) / pi`` on unit vectors ``u, v`` (the same angle, without arccos' rounding near 0).

    Args:
        n: Span length in blocks; the score of block ``l`` is the distance across the span ``l .. l+n-1`` that
            starts at it, so pruning the ``n`` blocks from the lowest-scored ``l`` follows the paper.
        model, tokenizer, texts, removed, batch_size, max_length: As in ``cosine_scores``.

    Returns:
        ``{original block index: distance}``, unitless in ``[0, 1]``, for the remaining blocks at positions
        ``l`` with ``l + n <= remaining count`` (all remaining blocks when ``n = 1``; the last ``n - 1`` get no
        score, since no span of ``n`` blocks starts there).

    Raises:
        ScoringError: As ``cosine_scores``, or ``n`` is not in ``[1, remaining block count]``.
        LayershearError: ``removed`` is out of range or removes every block.
    """
    batches = _batches(model, tokenizer, texts, batch_size, max_length)
    return _span_scores(model, batches, n=n, distance=_angle_over_pi, removed=removed)


def _nll_sum(model: PreTrainedModel, batch: _Batch) -> torch.Tensor:
    """Sum of next-token NLL (nats, float32 scalar) over real tokens: position t predicts token t+1."""
    logits = _forward(model, batch).logits[:, :-1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    nll = -logprobs.gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return nll[batch.attention_mask[:, 1:].bool()].sum()


def _predicted_tokens(batches: list[_Batch]) -> int:
    count = sum(int(b.attention_mask[:, 1:].sum()) for b in batches)
    if count == 0:
        raise ScoringError("every calibration text is a single token, so no token is predicted; pass texts of 2+ tokens")
    return count


@torch.inference_mode()
def _perplexity(model: PreTrainedModel, batches: list[_Batch], removed: Collection[int]) -> float:
    count = _predicted_tokens(batches)
    with remove_blocks(model, removed):
        total = sum(float(_nll_sum(model, batch)) for batch in batches)
    return math.exp(total / count)


def perplexity(
    model: PreTrainedModel, tokenizer: Any, texts: Sequence[str], *, removed: Collection[int] = (), batch_size: int = 8, max_length: int = 2048
) -> float:
    """Perplexity of the model without ``removed`` on ``texts``: ``exp`` of the mean next-token NLL.

    The mean is over every predicted real token of every text (token-weighted); token ``t`` predicts ``t+1``,
    so a 1-token text contributes nothing. Log-softmax is taken in float32.

    Args:
        model, tokenizer, texts, removed, batch_size, max_length: As in ``cosine_scores``.

    Returns:
        Perplexity, a float >= 1 (unitless).

    Raises:
        ScoringError: As ``cosine_scores``, or no text has 2 or more tokens.
        LayershearError: ``removed`` is out of range or removes every block.
    """
    return _perplexity(model, _batches(model, tokenizer, texts, batch_size, max_length), removed)


def perplexity_scores(
    model: PreTrainedModel, tokenizer: Any, texts: Sequence[str], *, removed: Collection[int] = (), batch_size: int = 8, max_length: int = 2048
) -> dict[int, float]:
    """Perplexity of the model once each remaining block is also removed (SLEB / Shortened LLaMA PPL).

    Song et al. 2024, "SLEB: Streamlining LLMs through Redundancy Verification and Elimination of
    Transformer Blocks" (arXiv 2402.09025), and the PPL criterion of Kim et al. 2024, "Shortened LLaMA:
    Depth Pruning for LLMs" (arXiv 2402.02834), Sec. 3.1: block ``l`` scores ``perplexity(removed | {l})``;
    a block whose removal hurts perplexity most is the most important. One pass over ``texts`` per block.

    Args:
        model, tokenizer, texts, removed, batch_size, max_length: As in ``cosine_scores``.

    Returns:
        ``{original block index: perplexity without it}`` for each remaining block.

    Raises:
        ScoringError: As ``perplexity``, or only one block remains (it cannot be removed too).
        LayershearError: ``removed`` is out of range.
    """
    batches = _batches(model, tokenizer, texts, batch_size, max_length)
    keep = _keep(model, removed)
    if len(keep) < 2:
        raise ScoringError(f"only block {keep[0]} remains after removing {sorted(removed)}; remove fewer blocks to score removals")
    return {block: _perplexity(model, batches, set(removed) | {block}) for block in keep}


@contextmanager
def _grad_only_for(model: PreTrainedModel, params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Eval mode, autograd on, and ``requires_grad`` only for ``params``; all three restored on exit."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    try:
        model.eval()
        for p, _ in saved:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
        model.train(training)


def taylor_scores(
    model: PreTrainedModel, tokenizer: Any, texts: Sequence[str], *, removed: Collection[int] = (), batch_size: int = 8, max_length: int = 2048
) -> dict[int, float]:
    """First-order Taylor importance of each block: ``sum over its weights of |W * dL/dW|`` (Shortened LLaMA).

    Kim et al. 2024, "Shortened LLaMA: Depth Pruning for LLMs" (arXiv 2402.02834), Sec. 3.1, Taylor+:
    ``I_l = sum_{W in block l} sum_k |W_k * dL/dW_k|`` with ``L`` the mean next-token NLL over every predicted
    real token of ``texts`` (gradients accumulated across batches, weighted by tokens). The paper's "+"
    (never pruning the first and last few blocks) is left to the caller. The model runs in eval mode; the
    gradient is taken with ``torch.autograd.grad``, so no ``.grad`` is written, and every parameter's
    ``requires_grad`` and the model's train/eval mode are restored on exit. Gradients are accumulated in
    float32, which needs one float32 copy of the remaining blocks' weights in memory.

    Args:
        model, tokenizer, texts, removed, batch_size, max_length: As in ``cosine_scores``.

    Returns:
        ``{original block index: importance}`` for each remaining block, in nats (the loss's unit), >= 0.

    Raises:
        ScoringError: As ``perplexity``.
        LayershearError: ``removed`` is out of range or removes every block.
    """
    batches = _batches(model, tokenizer, texts, batch_size, max_length)
    count = _predicted_tokens(batches)
    keep = _keep(model, removed)
    with remove_blocks(model, removed):
        per_block = [list(block.parameters()) for block in decoder_blocks(model)]
        params = [p for ps in per_block for p in ps]
        with _grad_only_for(model, params):
            grads = [[torch.zeros_like(p, dtype=torch.float32) for p in ps] for ps in per_block]
            accumulators = [g for gs in grads for g in gs]
            for batch in batches:
                step = torch.autograd.grad(_nll_sum(model, batch) / count, params, allow_unused=True)
                for acc, g in zip(accumulators, step):
                    if g is not None:
                        acc += g.float()
    return {
        block: float(sum((p.detach().float() * g).abs().sum(dtype=torch.float64) for p, g in zip(ps, gs)))
        for block, ps, gs in zip(keep, per_block, grads)
    }
