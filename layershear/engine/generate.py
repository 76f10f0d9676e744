"""Batched greedy generation with a KV cache, as lm-evaluation-harness's ``HFLM.generate_until`` does it.

lm-eval 0.4.13 (``lm_eval/models/huggingface.py``: ``generate_until``, ``tok_batch_encode``,
``_model_generate``; ``lm_eval/models/utils.py``: ``handle_stop_sequences``,
``postprocess_generated_text``):

* the tokenizer's EOS text is added to the stop strings ``until``;
* contexts are sorted by token count, longest first (ties by the context string), batched in that
  order, left padded, and left truncated to ``max_length - max_gen_toks`` tokens;
* decoding is greedy (``do_sample=False``) for at most ``max_gen_toks`` new tokens;
* the new tokens are decoded with ``skip_special_tokens=True`` and the text is cut at the first
  occurrence of every stop string (``s = s.split(term)[0]``); results come back in input order.

Differences, each leaving the returned text unchanged:

* lm-eval's stopping criterion ends a batch once every row has produced the *same* stop string;
  here each row stops at its own first stop string or EOS token (transformers then pads it), so a
  batch ends as soon as every row has stopped. Greedy decoding is causal, so the text before a
  row's first stop string does not depend on when the batch ends. (One corner case differs: a row
  whose stop string is a special token that ``skip_special_tokens`` removes keeps, in lm-eval, the
  text it goes on generating until its batch ends; here that text is never generated.)
* contexts are encoded without special tokens; ``add_bos`` prepends the BOS token (the project's
  flag, lm-eval's ``add_bos_token=True``). lm-eval with ``add_bos_token=None`` uses the tokenizer's
  own default, which is the same for tokenizers that add nothing (SmolLM2, Qwen, GPT-2).

Removed blocks are taken out in memory (:func:`layershear.model.surgery.remove_blocks`, which
renumbers ``layer_idx`` so the KV cache is indexed by the kept blocks). The prompt is recomputed for
every candidate model: nothing of one candidate's prompt pass is reused by another.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from layershear.errors import ScoringError

LOG = logging.getLogger(__name__)

MAX_GEN_TOKS = 256
"""lm-eval's ``HFLM.max_gen_toks`` default."""

#: on_progress(label, batches_done, batches_total), after every generated batch.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GenerationStats:
    """What one or more generation runs cost.

    Attributes:
        prompts: contexts generated for.
        prompt_tokens: context tokens fed to the model (after truncation, without padding).
        generated_tokens: new tokens up to and including each row's stop (EOS or the token that
            completed a stop string), summed over rows; padding after a row stopped is not counted.
        forward_passes: model forward calls (one per new-token step of each batch, the prompt pass included).
        seconds: wall-clock seconds spent in generation.
    """

    prompts: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    forward_passes: int = 0
    seconds: float = 0.0

    def __add__(self, other: GenerationStats) -> GenerationStats:
        return GenerationStats(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per wall-clock second (0.0 before anything ran)."""
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        """The fields and ``tokens_per_second``, seconds rounded to milliseconds (for JSON)."""
        return {**asdict(self), "seconds": round(self.seconds, 3), "tokens_per_second": round(self.tokens_per_second, 2)}


class _StopAtStrings(StoppingCriteria):
    """Per-row stop: the row's new tokens end in an EOS id, or their text (special tokens kept, as
    lm-eval's ``MultiTokenEOSCriteria`` decodes them) contains a stop string."""

    def __init__(self, tokenizer, until: Sequence[str], prompt_len: int, batch: int, eos_ids: set[int]) -> None:
        self.tokenizer, self.until, self.prompt_len, self.eos_ids = tokenizer, tuple(until), prompt_len, eos_ids
        self.done = torch.zeros(batch, dtype=torch.bool)
        self.lengths = [0] * batch

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_len:].tolist()
        for i, row in enumerate(new):
            if self.done[i]:
                continue
            self.lengths[i] = len(row)
            if row[-1] in self.eos_ids or any(s in self.tokenizer.decode(row, skip_special_tokens=False)
                                              for s in self.until):
                self.done[i] = True
        return self.done.to(input_ids.device).clone()


def cut_at_stops(text: str, until: Iterable[str]) -> str:
    """``text`` before the first occurrence of any stop string (lm-eval ``postprocess_generated_text``;
    empty stop strings are ignored, as there)."""
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


def _eos_ids(model, tokenizer) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return {int(i) for i in ids}


def _pad_id(tokenizer) -> int:
    for tok_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    return 0


class GenerationEngine:
    """Greedy generation of one set of contexts, for any candidate model (the model without some blocks).

    The contexts are tokenised and batched once; :meth:`run` generates for them with any set of
    blocks removed. See the module docstring for how this follows lm-eval.

    Args:
        model: a loaded causal LM in eval mode (any architecture :mod:`layershear.model.arch` supports).
        tokenizer: its tokenizer (``decode`` and ``__call__``).
        contexts: the prompts.
        until: stop strings (the tokenizer's EOS text is added, as lm-eval does).
        max_gen_toks: most new tokens per context (lm-eval default 256).
        max_length: the model's context length in tokens; None = lm-eval's default (the config's
            ``n_positions``, ``max_position_embeddings`` or ``n_ctx``, else 2048). Contexts are left
            truncated to ``max_length - max_gen_toks`` tokens.
        batch_size: contexts per ``generate`` call.
        add_bos: prepend the tokenizer's BOS token to every context (models trained to see one, Gemma).
        on_progress: called as ``on_progress(label, batches_done, batches_total)``.
        label: the progress label.

    Raises:
        ScoringError: no contexts, ``batch_size`` or ``max_gen_toks`` below 1, ``max_length`` not
            above ``max_gen_toks``, ``add_bos`` with a tokenizer that has no BOS, or an empty context
            (nothing to condition on).
    """

    def __init__(self, model, tokenizer, contexts: Sequence[str], *, until: Sequence[str],
                 max_gen_toks: int = MAX_GEN_TOKS, max_length: int | None = None, batch_size: int = 16,
                 add_bos: bool = False, on_progress: ProgressFn | None = None, label: str = "generate") -> None:
        from layershear.engine.requests import default_max_length
        from layershear.model.arch import decoder_blocks

        if not contexts:
            raise ScoringError("generation needs at least one context")
        if batch_size < 1 or max_gen_toks < 1:
            raise ScoringError(f"batch_size={batch_size} and max_gen_toks={max_gen_toks} must both be >= 1")
        self.model, self.tokenizer = model, tokenizer
        self.max_gen_toks, self.label, self.on_progress = max_gen_toks, label, on_progress
        self.max_length = max_length or default_max_length(model)
        if self.max_length <= max_gen_toks:
            raise ScoringError(f"max_length {self.max_length} leaves no room for the context after max_gen_toks "
                               f"{max_gen_toks} new tokens; raise --max-length")
        eos_text = tokenizer.decode([tokenizer.eos_token_id], skip_special_tokens=False) \
            if tokenizer.eos_token_id is not None else None
        self.until = tuple(until) + ((eos_text,) if eos_text and eos_text not in until else ())
        self.ids = self._encode(list(contexts), add_bos)
        order = sorted(range(len(contexts)), key=lambda k: (-len(self.ids[k]), contexts[k]))
        self.batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        self.num_tokens = sum(len(r) for r in self.ids)
        self.num_blocks = len(decoder_blocks(model))
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = _pad_id(tokenizer)
        self.models_generated = 0

    def _encode(self, contexts: list[str], add_bos: bool) -> list[list[int]]:
        if add_bos and self.tokenizer.bos_token_id is None:
            raise ScoringError("add_bos is set but the tokenizer has no BOS token")
        prefix = [int(self.tokenizer.bos_token_id)] if add_bos else []
        keep = self.max_length - self.max_gen_toks
        ids = [(prefix + list(row))[-keep:] for row in self.tokenizer(contexts, add_special_tokens=False)["input_ids"]]
        empty = [k for k, row in enumerate(ids) if not row]
        if empty:
            raise ScoringError(f"context {empty[0]} tokenises to no tokens; nothing to generate from")
        return ids

    def _config(self):
        config = copy.deepcopy(self.model.generation_config)   # never change the model's own
        config.update(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None, min_p=None,
                      max_new_tokens=self.max_gen_toks, pad_token_id=self.pad_id, use_cache=True)
        return config

    def _batch(self, rows: list[int], device: torch.device) -> tuple[list[str], int, int]:
        """Texts of one batch, its generated tokens and its forward passes."""
        seqs = [self.ids[k] for k in rows]
        width = max(len(s) for s in seqs)
        input_ids = torch.tensor([[self.pad_id] * (width - len(s)) + s for s in seqs], device=device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
        stop = _StopAtStrings(self.tokenizer, self.until, width, len(rows), self.eos_ids)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=self._config(),
                                  stopping_criteria=StoppingCriteriaList([stop]))
        new = out[:, width:].tolist()
        texts = [cut_at_stops(self.tokenizer.decode(row[:n], skip_special_tokens=True), self.until)
                 for row, n in zip(new, stop.lengths)]
        return texts, sum(stop.lengths), out.shape[1] - width

    @torch.inference_mode()
    def run(self, removed: Iterable[int] = ()) -> tuple[list[str], GenerationStats]:
        """Generate for every context with the blocks in ``removed`` taken out.

        Returns:
            ``(texts, stats)``: one generated text per context, in input order, cut at the stop
            strings; and what it cost (:class:`GenerationStats`).

        Raises:
            LayershearError: a block index out of range, or every block removed.
        """
        from layershear.model.surgery import remove_blocks

        texts: list[str] = [""] * len(self.ids)
        generated = passes = 0
        started = time.perf_counter()
        device = next(self.model.parameters()).device
        with remove_blocks(self.model, removed):
            for done, rows in enumerate(self.batches, start=1):
                batch_texts, n_new, n_pass = self._batch(rows, device)
                for k, text in zip(rows, batch_texts):
                    texts[k] = text
                generated, passes = generated + n_new, passes + n_pass
                if self.on_progress is not None:
                    self.on_progress(self.label, done, len(self.batches))
        self.models_generated += 1
        stats = GenerationStats(len(self.ids), self.num_tokens, generated, passes, time.perf_counter() - started)
        LOG.debug("generated %d tokens for %d prompts in %.2fs", generated, len(self.ids), stats.seconds)
        return texts, stats


def generate_until(model, tokenizer, contexts: Sequence[str], *, until: Sequence[str],
                   max_gen_toks: int = MAX_GEN_TOKS, max_length: int | None = None, batch_size: int = 16,
                   add_bos: bool = False, removed: Iterable[int] = (),
                   on_progress: ProgressFn | None = None) -> tuple[list[str], GenerationStats]:
    """Greedy generation for ``contexts`` until a stop string, lm-eval's ``HFLM.generate_until``.

    Args: as :class:`GenerationEngine`; ``removed``: original indices of blocks taken out in memory.

    Returns:
        ``(texts, stats)``: one text per context in input order, cut at the first stop string
        (``until`` plus the tokenizer's EOS text), and the :class:`GenerationStats` of the run.

    Raises:
        ScoringError: as :class:`GenerationEngine`. LayershearError: a bad block index in ``removed``.

    Example:
        >>> texts, stats = generate_until(model, tokenizer, ["Question: 2+2?\\nAnswer:"], until=["Question:"])
    """
    engine = GenerationEngine(model, tokenizer, contexts, until=until, max_gen_toks=max_gen_toks,
                              max_length=max_length, batch_size=batch_size, add_bos=add_bos, on_progress=on_progress)
    return engine.run(removed)
