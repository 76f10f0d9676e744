"""Raw-text documents scored by next-token accuracy and token perplexity, so that relevance is defined on them.

Definition (layershear's; the paper uses C4, CodeAlpaca and LIMA as calibration sets but does not
say how accuracy is computed on raw text):

* A document's text is tokenised without special tokens and cut into consecutive, non-overlapping
  chunks of ``chunk_tokens`` tokens (:data:`CHUNK_TOKENS` = 256; the last chunk may be shorter).
  Each chunk is scored on its own after the prefix token (BOS, else EOS), as lm-eval's
  ``loglikelihood_rolling`` scores its first window (``lm_eval/models/huggingface.py``,
  ``get_rolling_token_windows`` with ``context_len=1``); unlike its later windows, a chunk does not
  see the last token of the previous chunk.
* Every token of a chunk is one *item* (:class:`TokenItem`) and one lm-eval ``loglikelihood``
  request with a one-token continuation, scored by the two metrics lm-eval's ``loglikelihood``
  tasks report (``lambada_openai.yaml``; ``process_results`` in ``lm_eval/api/task.py``): ``acc`` =
  ``is_greedy``, the token is the model's top-1 prediction given the prefix token and the chunk's
  tokens before it (``argmax`` over the vocabulary, first index on ties), and ``perplexity``.
  **Next-token accuracy** is the share of correct tokens (micro average over all tokens of D):
  LAMBADA's ``acc`` asked of every token instead of a passage's last word.
* r(D) for a token is ``1 / vocab_size``: a uniform random guess over the output vocabulary.
  AccBasedRelevance is then defined whenever the model predicts better than that.
* **Perplexity** = ``exp(-mean log p(token))`` over the same tokens (natural log): lm-eval's
  ``perplexity`` aggregation over one-token requests, i.e. token perplexity (not the word or byte
  perplexity of lm-eval's ``wikitext``/``c4`` tasks, which need whole-document rolling windows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from layershear.data.benchmarks.text import TextDoc
from layershear.engine.requests import Request, prefix_token_id
from layershear.errors import ScoringError

CHUNK_TOKENS = 256
"""Tokens per chunk of a text document (the stated chunk length)."""


@dataclass(frozen=True)
class TokenItem:
    """One token of a text document: predict ``chunk_ids[position + 1]`` from ``chunk_ids[:position + 1]``.

    Attributes:
        task: the corpus (``c4``, ``wikitext``, ...).
        doc_id: the document's id in its split (what calibration and evaluation exclusions use).
        chunk: the chunk's index within the document.
        position: index of the predicted token within the chunk's tokens (0 = the first, seen after
            the prefix token only).
        chunk_ids: the prefix token and the chunk's token ids (shared by the chunk's items).
        vocab_size: size of the model's output vocabulary; ``num_choices`` for r(D) = 1 / vocab_size.
    """

    task: str
    doc_id: int
    chunk: int
    position: int
    chunk_ids: tuple[int, ...] = field(repr=False)
    vocab_size: int

    @property
    def num_choices(self) -> int:
        """The output vocabulary: a random guess is right with probability ``1 / num_choices``."""
        return self.vocab_size

    @property
    def target(self) -> int:
        return self.chunk_ids[self.position + 1]

    def requests(self, item: int) -> list[Request]:
        """Two requests on the same position: [top-1 hit (``greedy``), log-probability] of the token."""
        ids = (self.chunk_ids[:self.position + 1], (self.target,))
        origin = f"{self.task} doc {self.doc_id} chunk {self.chunk} token {self.position}"
        return [Request("", "", item, 0, origin, token_ids=ids, greedy=True),
                Request("", "", item, 1, origin, token_ids=ids)]


def token_items(docs: Sequence[TextDoc], tokenizer, *, vocab_size: int,
                chunk_tokens: int = CHUNK_TOKENS) -> list[list[TokenItem]]:
    """The :class:`TokenItem` of every token of every document, one list per document.

    Args:
        docs: text documents.
        tokenizer: the model's Hugging Face tokenizer (no special tokens added; the prefix token is
            BOS, else EOS).
        vocab_size: the model's output vocabulary size (``lm_head.out_features``).
        chunk_tokens: tokens per chunk (module docstring).

    Raises:
        ScoringError: ``chunk_tokens`` < 1, or a document tokenises to nothing.
    """
    if chunk_tokens < 1:
        raise ScoringError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if not docs:
        return []
    prefix = prefix_token_id(tokenizer)
    encoded = tokenizer([d.text for d in docs], add_special_tokens=False)["input_ids"]
    out = []
    for doc, ids in zip(docs, encoded):
        if not ids:
            raise ScoringError(f"{doc.task} doc {doc.doc_id}: the text tokenises to no token")
        items = []
        for chunk, start in enumerate(range(0, len(ids), chunk_tokens)):
            chunk_ids = (prefix, *ids[start:start + chunk_tokens])
            items.extend(TokenItem(doc.task, doc.doc_id, chunk, p, chunk_ids, vocab_size)
                         for p in range(len(chunk_ids) - 1))
        out.append(items)
    return out


def expand_text(items: Sequence, tokenizer, *, vocab_size: int, chunk_tokens: int = CHUNK_TOKENS) -> list:
    """``items`` with every :class:`TextDoc` replaced, in place, by its tokens' :class:`TokenItem`;
    multiple-choice items pass through unchanged."""
    texts = [it for it in items if isinstance(it, TextDoc)]
    if not texts:
        return list(items)
    expanded = iter(token_items(texts, tokenizer, vocab_size=vocab_size, chunk_tokens=chunk_tokens))
    out: list = []
    for it in items:
        out.extend(next(expanded) if isinstance(it, TextDoc) else [it])
    return out


def output_vocab_size(model) -> int:
    """Rows of the model's LM head: the number of tokens a top-1 prediction chooses among."""
    head = model.get_output_embeddings()
    return int(getattr(head, "out_features", None) or head.weight.shape[0])
