"""(context, continuation) requests and their tokenisation, as lm-evaluation-harness builds them.

Reproduces lm-eval's ``HFLM._encode_pair`` for causal LMs (lm_eval/models/huggingface.py): trailing
whitespace of the context moves onto the continuation, ``cont = enc(context + continuation)[len(enc(context)):]``,
an empty context is replaced by the prefix token (BOS, else EOS), and no special tokens are added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from layershear.data.benchmarks import MCItem, split_whitespace
from layershear.errors import ScoringError


@dataclass(frozen=True)
class Request:
    """One log-likelihood request (lm-eval ``Instance`` of type ``loglikelihood``).

    ``item`` groups requests that belong to one document (its choices): the packed layout puts them
    in one prefix tree, so their common context is computed once. ``choice`` is the request's index
    within its document; ``origin`` names the document in error messages (``"arc_easy doc 12"``).
    ``token_ids``: the request already tokenised, ``(context ids, continuation ids)``; the strings
    are then only descriptive and ``add_bos`` does not apply. ``greedy``: the request's value is the
    number of continuation tokens that are the model's top-1 prediction (lm-eval's ``is_greedy``,
    counted per token) instead of their summed log-probability.
    """

    context: str
    continuation: str
    item: int = 0
    choice: int = 0
    origin: str = ""
    token_ids: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    greedy: bool = False


def greedy_target(token_id: int) -> int:
    """How a scored position whose value is "is ``token_id`` the top-1 prediction" is marked among the
    target ids that reach :func:`layershear.engine.forward.target_logprobs`: ``~token_id`` (negative)."""
    return ~token_id


@dataclass(frozen=True)
class EncodedRequest:
    """One request as token ids; ``item``/``choice``/``greedy`` as in :class:`Request`."""

    item: int
    choice: int
    context_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]
    greedy: bool = False

    @property
    def num_tokens(self) -> int:
        """Tokens fed to the model: context + continuation minus the last one (it is only predicted)."""
        return len(self.context_ids) + len(self.continuation_ids) - 1

    def truncated(self, max_length: int) -> tuple[list[int], int, list[int]]:
        """lm-eval's left truncation to ``max_length + 1`` tokens: (input token ids, index of the first
        scored input position, target token ids, one per scored position)."""
        tokens = list(self.context_ids + self.continuation_ids)[-(max_length + 1):]
        inp = tokens[:-1]
        n_cont = min(len(self.continuation_ids), len(inp))     # n_cont < len(tokens): check_lengths
        targets = tokens[len(tokens) - n_cont:]
        return inp, len(inp) - n_cont, [greedy_target(t) for t in targets] if self.greedy else targets


def requests_of(items: Sequence) -> list[Request]:
    """The requests of every item, item-major: one per choice of a multiple-choice item, in choice
    order (lm-eval's ``multiple_choice`` ``construct_requests``); an item with its own ``requests(i)``
    (a text token, :class:`layershear.scoring.text.TokenItem`) gives those."""
    out: list[Request] = []
    for i, item in enumerate(items):
        if isinstance(item, MCItem):
            out.extend(Request(ctx, cont, i, c, f"{item.task} doc {item.doc_id}")
                       for c, (ctx, cont) in enumerate(zip(item.contexts, item.continuations)))
        elif hasattr(item, "requests"):
            out.extend(item.requests(i))
        else:
            raise ScoringError(f"{item.task} doc {item.doc_id}: a generative task (lm-eval generate_until) has no "
                               "log-likelihood requests; score it alone (--calib gsm8k:N, --tasks gsm8k:N), not in a "
                               "mix or in analyze")
    return out


def requests_by_item(requests: Sequence[Request], num_items: int) -> list[list[int]]:
    """Indices of each item's requests, in request order (``item_requests[i]``: choices of a
    multiple-choice item; a text token's top-1 hit, then its log-probability)."""
    out: list[list[int]] = [[] for _ in range(num_items)]
    for k, req in enumerate(requests):
        out[req.item].append(k)
    return out


def prefix_token_id(tokenizer) -> int:
    """lm-eval's ``prefix_token_id``: BOS, else EOS (what an empty context is replaced by)."""
    for tok_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    raise ScoringError("The tokenizer has neither a BOS nor an EOS token; an empty context cannot be scored")


def encode_requests(requests: Sequence[Request] | Sequence[MCItem], tokenizer, *,
                    add_bos: bool = False) -> list[EncodedRequest]:
    """Tokenise requests (or every choice of every item, see :func:`requests_of`).

    Args:
        requests: the requests, or multiple-choice items.
        tokenizer: a Hugging Face tokenizer; called without special tokens (lm-eval's default for
            causal LMs) unless ``add_bos`` is set, which prepends BOS to every context (Gemma-style).

    Returns:
        One encoded request per request, in order.

    Raises:
        ScoringError: a continuation tokenises to zero tokens.
    """
    if requests and not isinstance(requests[0], Request):
        requests = requests_of(requests)
    text = [r for r in requests if r.token_ids is None]
    pairs = [split_whitespace(r.context, r.continuation) for r in text]
    wholes = tokenizer([ctx + cont for ctx, cont in pairs], add_special_tokens=False)["input_ids"] if text else []
    ctxs = tokenizer([ctx for ctx, _ in pairs], add_special_tokens=False)["input_ids"] if text else []
    encoded = iter(zip(wholes, ctxs))
    prefix = [prefix_token_id(tokenizer)] if add_bos else []
    out = []
    for req in requests:
        if req.token_ids is not None:
            out.append(EncodedRequest(req.item, req.choice, *req.token_ids, greedy=req.greedy))
            continue
        whole, ctx = next(encoded)
        cont = whole[len(ctx):]
        if not cont:
            where = req.origin or f"request of item {req.item}"
            raise ScoringError(f"{where} choice {req.choice}: empty continuation after tokenisation")
        context_ids = prefix + list(ctx)
        if not context_ids:
            context_ids = [prefix_token_id(tokenizer)]
        out.append(EncodedRequest(req.item, req.choice, tuple(context_ids), tuple(cont), greedy=req.greedy))
    return out


def default_max_length(model, fallback: int = 2048) -> int:
    """lm-eval's ``HFLM.max_length``: the model config's context length, else ``fallback`` tokens."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return fallback


def check_lengths(requests: Sequence[EncodedRequest], max_length: int) -> None:
    """Raises ScoringError if a continuation alone does not fit in ``max_length`` tokens (it could not be scored whole)."""
    longest = max((len(r.continuation_ids) for r in requests), default=0)
    if longest > max_length:
        raise ScoringError(f"a continuation is {longest} tokens long, more than --max-length {max_length}; raise --max-length")


def length_sorted_batches(requests: Sequence[EncodedRequest], batch_size: int) -> list[list[int]]:
    """Indices of ``requests`` grouped into batches, longest first (lm-eval's reordering)."""
    order = sorted(range(len(requests)), key=lambda k: (-requests[k].num_tokens, k))
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
