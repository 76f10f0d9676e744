"""Scorer: accuracy of a model with any set of decoder blocks removed, and per-block relevance."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from layershear.arch import decoder_blocks
from layershear.benchmarks import MCItem, get_task, random_accuracy
from layershear.engine import ENGINES, ROW_TOKENS, BatchShape, Engine, EngineStats, FlopModel, batch_shape
from layershear.errors import ScoringError
from layershear.loglik import batch_loglikelihoods, check_lengths, default_max_length, encode_requests, length_sorted_batches
from layershear.metrics import above_random, correct, item_scores, relevance, relevance_or_none
from layershear.packing import PackedBatch, pack_requests, packable, packed_loglikelihoods
from layershear.prefix_cache import BlockInputs, capturing, injecting
from layershear.surgery import drop_blocks

LOG = logging.getLogger(__name__)

#: on_progress(label, done, total): called after every forward batch.
ProgressFn = Callable[[str, int, int], None]

@dataclass(frozen=True)
class Evaluation:
    """Calibration accuracy of the model with ``drop`` removed.

    ``accuracy`` is the micro average over all items (each item's own metric, see
    :func:`task_metric`), ``random`` is r(D) over the same items; ``gold_prob`` is the mean
    softmax probability (over the item's choices) of the gold choice, a smooth tie-breaker.
    """

    drop: frozenset[int]
    accuracy: float
    random: float
    gold_prob: float
    accuracy_by_task: dict[str, float]
    random_by_task: dict[str, float]
    correct: tuple[bool, ...] = field(repr=False)
    loglikelihoods: torch.Tensor | None = field(default=None, repr=False, compare=False)  # float64 [num_requests]

    @property
    def above_random(self) -> bool:
        return above_random(self.accuracy, self.random)


@dataclass(frozen=True)
class BlockScore:
    """Relevance of one block relative to the model it is removed from (paper: AccBasedRelevance)."""

    block_idx: int
    relevance: float
    accuracy: float
    relevance_by_task: dict[str, float | None]
    accuracy_by_task: dict[str, float]
    gold_prob: float


def task_metric(task: str, metric: str = "auto") -> str:
    """The accuracy metric scored for ``task``: ``auto`` = acc_norm where lm-eval reports it, else acc."""
    if metric != "auto":
        return metric
    return "acc_norm" if "acc_norm" in get_task(task).metrics else "acc"


def block_score(parent: Evaluation, child: Evaluation, block_idx: int) -> BlockScore:
    """Relevance of ``block_idx`` = removing it from ``parent`` gives ``child``.

    Raises:
        ScoringError: the parent model is not above random on the calibration set.
    """
    return BlockScore(
        block_idx=block_idx,
        relevance=relevance(child.accuracy, parent.accuracy, parent.random),
        accuracy=child.accuracy,
        relevance_by_task={t: relevance_or_none(child.accuracy_by_task[t], a, parent.random_by_task[t])
                           for t, a in parent.accuracy_by_task.items()},
        accuracy_by_task=dict(child.accuracy_by_task),
        gold_prob=child.gold_prob,
    )


class Scorer:
    """Accuracy-based relevance of decoder blocks on a calibration set.

    Each evaluation runs every (context, continuation) request through the model with the chosen
    blocks removed in memory (no weights copied or reloaded). The ``fast`` engine lays requests out
    in packed prefix-tree rows (:mod:`layershear.packing`), the ``reference`` engine in lm-eval's
    length-sorted, right-padded batches. Results are memoised by drop set, so greedy and beam search
    never evaluate a model twice.

    Args:
        model: a loaded causal LM (any architecture :mod:`layershear.arch` supports), in eval mode.
        tokenizer: its tokenizer.
        items: the calibration set D.
        batch_size: sequences per forward pass (lm-eval layout); packed batches hold at most as many
            tokens as ``batch_size`` sequences of the longest request.
        max_length: left-truncation length in tokens; None = the model's context length (lm-eval).
        metric: ``auto`` (acc_norm where the task reports it, else acc), ``acc`` or ``acc_norm``.
        add_bos: prepend BOS to every context (models trained to always see one, e.g. Gemma).
        engine: ``fast`` (default), ``reference`` (see :data:`ENGINES`) or an :class:`Engine`; all
            give the same numbers (up to floating-point rounding of the LM head's batch shape).
        on_progress: progress callback, see :data:`ProgressFn`.

    Raises:
        ScoringError: empty calibration set, unknown engine.

    Example:
        >>> scorer = Scorer(model, tokenizer, items)
        >>> full = scorer.evaluate()                 # Acc(f, D)
        >>> scores = scorer.score_blocks()           # relevance of every block
    """

    def __init__(self, model, tokenizer, items: Sequence[MCItem], *, batch_size: int = 16,
                 max_length: int | None = None, metric: str = "auto", add_bos: bool = False,
                 engine: str | Engine = "fast", on_progress: ProgressFn | None = None) -> None:
        if not items:
            raise ScoringError("The calibration set is empty; check the recipe's tasks and fractions")
        if isinstance(engine, str) and engine not in ENGINES:
            raise ScoringError(f"Unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
        self.engine = ENGINES[engine] if isinstance(engine, str) else engine
        self.model = model
        self.items = list(items)
        self.metrics = [task_metric(item.task, metric) for item in self.items]
        self.requests = encode_requests(self.items, tokenizer, add_bos=add_bos)
        self.max_length = max_length or default_max_length(model)
        check_lengths(self.requests, self.max_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.packed = self.engine.packed and packable(model)
        self.row_tokens: int | None = None     # packed row width in use
        if self.engine.packed and not self.packed:
            LOG.warning("%s: packed rows / shared contexts are not tested for this architecture; scoring unpacked",
                        model.config.model_type)
        self.batches: list[list[int] | PackedBatch]
        if self.packed:
            self.batches = self._packed_batches(batch_size)
        else:
            self.batches = length_sorted_batches(self.requests, batch_size)
        self.on_progress = on_progress
        self.num_blocks = len(decoder_blocks(model))
        self.num_evaluations = 0
        self.stats = EngineStats()
        self._cache: dict[frozenset[int], Evaluation] = {}
        self._prefix: BlockInputs | None = None   # block inputs of the last parent whose children were scored
        self._shapes = self._shapes_of(self.batches)

    def _shapes_of(self, batches) -> list[BatchShape]:
        return [batch_shape(b if isinstance(b, PackedBatch) else [self.requests[k] for k in b], self.max_length,
                            self.engine) for b in batches]

    def _packed_batches(self, batch_size: int) -> list[PackedBatch]:
        """Packed layout; with ``row_tokens=None`` the row width with the fewest counted FLOPs."""
        longest = max(min(r.num_tokens, self.max_length) for r in self.requests)
        widths = [self.engine.row_tokens] if self.engine.row_tokens else list(ROW_TOKENS)
        flops = FlopModel.of(self.model)
        best = None
        for width in widths:
            batches = pack_requests(self.requests, max_length=self.max_length, share=self.engine.share_context,
                                    pack=self.engine.pack, row_tokens=width, batch_tokens=batch_size * max(longest, width))
            cost = flops.pass_flops(self._shapes_of(batches), len(decoder_blocks(self.model)))
            if best is None or cost < best[0]:
                best = (cost, width, batches)
        self.row_tokens = best[1]
        return best[2]

    @property
    def num_tokens(self) -> int:
        """Tokens one evaluation feeds through the model (without padding)."""
        return sum(r.num_tokens for r in self.requests)

    def loglikelihoods(self, drop: Iterable[int] = (), *, label: str = "", hook=None,
                       cache: BlockInputs | None = None) -> torch.Tensor:
        """Per-request log-likelihoods (float64 ``[num_requests]``) with ``drop`` removed.

        ``hook`` is a context manager factory ``hook(model)`` entered inside ``drop_blocks`` (used to
        capture or inject block inputs); ``cache.batch`` is advanced after every forward pass.
        """
        drop = frozenset(drop)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if cache is not None:
                cache.batch = done
            if self.on_progress is not None:
                self.on_progress(label, done, len(self.batches))

        self.stats.count(self._shapes, blocks_run=self.num_blocks - len(drop))
        out = torch.empty(len(self.requests), dtype=torch.float64)
        full_logits = not self.engine.scored_head
        with drop_blocks(self.model, drop), (hook(self.model) if hook else contextlib.nullcontext()):
            for batch in self.batches:
                if isinstance(batch, PackedBatch):
                    out[list(batch.requests)] = packed_loglikelihoods(self.model, batch, pad_id=self.pad_id,
                                                                      full_logits=full_logits)
                else:
                    out[batch] = batch_loglikelihoods(self.model, [self.requests[k] for k in batch],
                                                      max_length=self.max_length, pad_id=self.pad_id,
                                                      full_logits=full_logits)
                tick()
        return out

    def evaluate(self, drop: Iterable[int] = ()) -> Evaluation:
        """Acc(f_-drop, D): calibration accuracy with the blocks in ``drop`` removed (memoised)."""
        key = frozenset(drop)
        if key not in self._cache and self.engine.skip_prefix and self._prefix is None:
            self._prefix_for(key)          # the first evaluation also caches its block inputs
        if key not in self._cache:
            self._store(key, self.loglikelihoods(key, label=f"without {sorted(key)}" if key else "full model"))
        return self._cache[key]

    def _evaluation(self, drop: frozenset[int], lls: torch.Tensor) -> Evaluation:
        scores = item_scores(self.items, lls, metrics=self.metrics)
        ok = correct(self.items, scores)
        probs = [torch.softmax(s, 0)[item.gold] for item, s in zip(self.items, scores)]
        by_task: dict[str, list[int]] = {}
        for k, item in enumerate(self.items):
            by_task.setdefault(item.task, []).append(k)
        return Evaluation(
            drop=drop,
            accuracy=float(ok.double().mean()),
            random=random_accuracy(self.items),
            gold_prob=float(torch.stack(probs).mean()),
            accuracy_by_task={t: float(ok[idx].double().mean()) for t, idx in sorted(by_task.items())},
            random_by_task={t: random_accuracy([self.items[k] for k in idx]) for t, idx in sorted(by_task.items())},
            correct=tuple(bool(x) for x in ok),
            loglikelihoods=lls,
        )

    def evaluate_children(self, drop: Iterable[int], blocks: Iterable[int]) -> dict[int, Evaluation]:
        """Acc(f_-b, D) for each block b still in f = the model with ``drop`` removed (memoised).

        With the ``fast`` engine, one forward of f captures every block's input, and candidate b runs
        only the blocks after b from the cached input of b (see :mod:`layershear.prefix_cache`).

        Returns:
            block index -> evaluation of f without that block, in the order of ``blocks``.
        """
        parent, blocks = frozenset(drop), list(blocks)
        missing = [b for b in blocks if parent | {b} not in self._cache]
        if missing and self.engine.skip_prefix:
            self._children_from_prefix(parent, missing)
        return {b: self.evaluate(parent | {b}) for b in blocks}

    def _children_from_prefix(self, parent: frozenset[int], missing: list[int]) -> None:
        cache = self._prefix_for(parent)
        kept = [k for k in range(self.num_blocks) if k not in parent]
        for b in missing:
            last = b == kept[-1]
            skipped = parent | {k for k in kept if (k < b if last else k <= b)}
            cache.batch = 0
            lls = self.loglikelihoods(skipped, label=f"without {sorted(parent | {b})}", cache=cache,
                                      hook=lambda m, b=b, last=last: injecting(m, cache, b, bypass=last))
            self._store(parent | {b}, lls)

    def _prefix_for(self, parent: frozenset[int]) -> BlockInputs:
        """Inputs of every block of f = model without ``parent``, derived from the previous step's cache
        when ``parent`` adds one block b to it (only the blocks after b are run), else by one full pass."""
        old = self._prefix
        if old is not None and old.drop == parent:
            return old
        kept = [k for k in range(self.num_blocks) if k not in parent]
        new = BlockInputs(parent)
        added = parent - old.drop if old is not None and old.drop < parent else set()
        if len(added) == 1 and max(added) < kept[-1]:
            (b,) = added
            new.states = {k: old.states[k] for k in kept if k < b}
            after = [k for k in kept if k > b]

            def hook(m):
                stack = contextlib.ExitStack()
                stack.enter_context(injecting(m, old, b))        # registered first: capture sees the cached input
                stack.enter_context(capturing(m, after, new))
                return stack

            old.batch = 0
            lls = self.loglikelihoods(parent | {k for k in kept if k < b}, label=f"caching block inputs without "
                                      f"{sorted(parent)}", hook=hook, cache=old)
        else:
            lls = self.loglikelihoods(parent, label=f"caching block inputs without {sorted(parent)}",
                                      hook=lambda m: capturing(m, kept, new))
        self._store(parent, lls)
        self._prefix = new
        self.stats.cache_bytes = max(self.stats.cache_bytes, new.nbytes + (old.nbytes if old else 0))
        return new

    def _store(self, drop: frozenset[int], lls: torch.Tensor) -> None:
        if drop not in self._cache:
            self._cache[drop] = self._evaluation(drop, lls)
            self.num_evaluations += 1

    def score_blocks(self, drop: Iterable[int] = ()) -> list[BlockScore]:
        """Relevance of every block still present in f = the model with ``drop`` removed.

        Returns:
            One :class:`BlockScore` per remaining block, in block order.

        Raises:
            ScoringError: f is not above random on the calibration set (relevance undefined).
        """
        parent = self.evaluate(drop)
        if not parent.above_random:
            raise ScoringError(
                f"relevance is undefined: with blocks {sorted(parent.drop)} removed the model's calibration accuracy "
                f"{parent.accuracy:.4f} is not above random ({parent.random:.4f}); use tasks on which it is above chance")
        children = self.evaluate_children(parent.drop, [b for b in range(self.num_blocks) if b not in parent.drop])
        return [block_score(parent, ev, b) for b, ev in children.items()]

