"""Scorer: accuracy of a model with any set of decoder blocks removed, and per-block relevance."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence

import torch

from layershear.data.benchmarks import MCItem
from layershear.engine.config import ENGINES, ROW_TOKENS, BatchShape, Engine, EngineStats, FlopModel, batch_shape
from layershear.engine.distributed import min_across, my_share, sum_across
from layershear.engine.forward import batch_loglikelihoods, check_lengths, default_max_length, encode_requests, length_sorted_batches
from layershear.engine.fused import Fusion, fused_kernels
from layershear.engine.packing import PackedBatch, pack_requests, packable, packed_loglikelihoods
from layershear.engine.prefix_cache import BlockInputs, CachePlan, injecting, plan_cache
from layershear.engine.runs import Run, child_run, stored_run
from layershear.engine.stacking import StackMember, stack_groups, stacking
from layershear.engine.step_reuse import StepReuse
from layershear.errors import ScoringError
from layershear.model.arch import decoder_blocks
from layershear.model.surgery import drop_blocks
from layershear.scoring.racing import RaceSettings, eliminated, item_slices, per_test_delta
from layershear.scoring.relevance import BlockScore, Evaluation, block_score, evaluation, task_metric

LOG = logging.getLogger(__name__)

#: on_progress(label, done, total): called after every forward batch; ``done`` and ``total`` count
#: batches of one candidate, so a stacked pass of C candidates (:mod:`layershear.engine.stacking`) advances C.
ProgressFn = Callable[[str, int, int], None]

class Scorer:
    """Accuracy-based relevance of decoder blocks on a calibration set.

    Each evaluation runs every (context, continuation) request through the model with the chosen
    blocks removed in memory (no weights copied or reloaded). The ``fast`` engine lays requests out
    in packed prefix-tree rows (:mod:`layershear.engine.packing`), the ``reference`` engine in lm-eval's
    length-sorted, right-padded batches. Results are memoised by drop set, so greedy and beam search
    never evaluate a model twice.

    Args:
        model: a loaded causal LM (any architecture :mod:`layershear.model.arch` supports), in eval mode.
        tokenizer: its tokenizer.
        items: the calibration set D.
        batch_size: sequences per forward pass (lm-eval layout); packed batches hold at most as many
            tokens as ``batch_size`` sequences of the longest request.
        max_length: left-truncation length in tokens; None = the model's context length (lm-eval).
        metric: ``auto`` (acc_norm where the task reports it, else acc), ``acc`` or ``acc_norm``.
        add_bos: prepend BOS to every context (models trained to always see one, e.g. Gemma).
        engine: ``fast`` (default), ``reference`` (see :data:`ENGINES`) or an :class:`Engine`; all
            give the same numbers up to floating-point rounding (in fp32 to about 1e-5; in bf16 batch
            shapes, stacking and the fused kernels of :mod:`layershear.engine.fused` round differently).
        on_progress: progress callback, see :data:`ProgressFn`.
        cache_plan: where and how densely block inputs are cached (``fast`` engine); None = chosen
            by measured free memory (:func:`layershear.engine.prefix_cache.plan_cache`).
        race: race the candidates of each step on growing random slices of D and stop scoring those
            that cannot be removed this step (:mod:`layershear.scoring.racing`); None = exact mode.

    Raises:
        ScoringError: empty calibration set, unknown engine.

    Example:
        >>> scorer = Scorer(model, tokenizer, items)
        >>> full = scorer.evaluate()                 # Acc(f, D)
        >>> scores = scorer.score_blocks()           # relevance of every block
    """

    def __init__(self, model, tokenizer, items: Sequence[MCItem], *, batch_size: int = 16,
                 max_length: int | None = None, metric: str = "auto", add_bos: bool = False,
                 engine: str | Engine = "fast", on_progress: ProgressFn | None = None,
                 cache_plan: CachePlan | None = None, race: RaceSettings | None = None) -> None:
        if not items:
            raise ScoringError("The calibration set is empty; check the recipe's tasks and fractions")
        if isinstance(engine, str) and engine not in ENGINES:
            raise ScoringError(f"Unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
        self.engine = ENGINES[engine] if isinstance(engine, str) else engine
        self.model = model
        self.items = list(items)
        self.metrics = [task_metric(item.task, metric) for item in self.items]
        self.requests = encode_requests(self.items, tokenizer, add_bos=add_bos)
        self.item_requests: list[list[int]] = [[] for _ in self.items]
        for k, req in enumerate(self.requests):
            self.item_requests[req.item].append(k)
        self.race = race
        self.item_slice = item_slices(len(self.items), race) if race else [0] * len(self.items)
        self.max_length = max_length or default_max_length(model)
        check_lengths(self.requests, self.max_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.num_blocks = len(decoder_blocks(model))
        self.fusion = Fusion.of(model) if self.engine.fused_kernels else Fusion()
        self.packed = self.engine.packed and packable(model)
        self.row_tokens: int | None = None     # packed row width in use
        if self.engine.packed and not self.packed:
            LOG.warning("%s: packed rows / shared contexts are not tested for this architecture; scoring unpacked",
                        model.config.model_type)
        self.batches: list[list[int] | PackedBatch]
        if self.packed:
            self.batches = self._packed_batches(batch_size)
        else:
            self.batches = self._sliced(lambda reqs: length_sorted_batches(reqs, batch_size))
        self.slice_batches: list[list[int]] = [[] for _ in range(max(self.item_slice) + 1)]
        for j, batch in enumerate(self.batches):
            self.slice_batches[self._slice_of(batch)].append(j)
        self.on_progress = on_progress
        self.num_evaluations = 0
        self.stats = EngineStats()
        self._cache: dict[frozenset[int], Evaluation] = {}
        self._raced: dict[frozenset[int], Evaluation] = {}   # racing estimates of candidates dropped early
        self._prefix: BlockInputs | None = None   # block inputs of the last parent whose children were scored
        self._shapes = self._shapes_of(self.batches)
        self.cache_plan: CachePlan | None = None
        self.step_reuse: StepReuse | None = None    # GreedyPruner sets its ``keep`` and ``until_depth``
        if self.engine.skip_prefix:
            embeddings = model.get_input_embeddings().weight
            # one block's input over this process's share of the batches (all of them for one process),
            # the largest share over processes so that every process plans alike
            mine = sum(self._shapes[j].rows * self._shapes[j].width for j in my_share(list(range(len(self.batches)))))
            block_bytes = mine * embeddings.shape[1] * embeddings.element_size()
            block_bytes = -min_across((-block_bytes,), embeddings.device)[0] if cache_plan is None else block_bytes
            self.cache_plan = cache_plan or plan_cache(block_bytes, self.num_blocks, embeddings.device)
            if self.engine.step_reuse and race is None:
                self.step_reuse = StepReuse(block_bytes=block_bytes, where=self.cache_plan.where,
                                            every=self.cache_plan.every,
                                            budget_bytes=self.cache_plan.budget_bytes - self.cache_plan.planned_bytes)

    def _shapes_of(self, batches) -> list[BatchShape]:
        return [batch_shape(b if isinstance(b, PackedBatch) else [self.requests[k] for k in b], self.max_length,
                            self.engine) for b in batches]

    def _sliced(self, layout):
        """``layout(requests)`` applied to each racing slice on its own (one slice without racing),
        with request indices mapped back to ``self.requests``."""
        out = []
        for sl in sorted(set(self.item_slice)):
            index = [k for k, r in enumerate(self.requests) if self.item_slice[r.item] == sl]
            for batch in layout([self.requests[k] for k in index]):
                if isinstance(batch, PackedBatch):
                    out.append(dataclasses.replace(batch, requests=tuple(index[k] for k in batch.requests)))
                else:
                    out.append([index[k] for k in batch])
        return out

    def _requests_of(self, batch) -> list[int]:
        return list(batch.requests) if isinstance(batch, PackedBatch) else list(batch)

    def _slice_of(self, batch) -> int:
        return self.item_slice[self.requests[self._requests_of(batch)[0]].item]

    def _packed_batches(self, batch_size: int) -> list[PackedBatch]:
        """Packed layout; with ``row_tokens=None`` the row width with the fewest counted FLOPs."""
        longest = max(min(r.num_tokens, self.max_length) for r in self.requests)
        widths = [self.engine.row_tokens] if self.engine.row_tokens is not None else list(ROW_TOKENS)
        if not self.engine.pack:
            widths = [0]
        flops = FlopModel.of(self.model)
        best = None
        for width in widths:
            batches = self._sliced(lambda reqs, width=width: pack_requests(
                reqs, max_length=self.max_length, share=self.engine.share_context, pack=self.engine.pack,
                row_tokens=width, batch_tokens=batch_size * max(longest, width)))
            cost = flops.pass_flops(self._shapes_of(batches), self.num_blocks)
            if best is None or cost < best[0]:
                best = (cost, width, batches)
        self.row_tokens = best[1]
        return best[2]

    @property
    def batch_shapes(self) -> list[BatchShape]:
        """Shape of every forward pass of one evaluation (rows, width, real tokens, ...)."""
        return list(self._shapes)

    @property
    def num_tokens(self) -> int:
        """Tokens one evaluation feeds through the model (without padding)."""
        return sum(r.num_tokens for r in self.requests)

    def loglikelihoods(self, drop: Iterable[int] = (), *, label: str = "", hook=None,
                       caches: Sequence[BlockInputs] = (), only: Sequence[int] | None = None,
                       reduce: bool = True) -> torch.Tensor:
        """Per-request log-likelihoods (float64 ``[num_requests]``) with ``drop`` removed.

        ``hook`` is a context manager factory ``hook(model)`` entered inside ``drop_blocks`` (used to
        capture or inject block inputs); ``cache.batch`` of each of ``caches`` is set to the index of
        each batch before it runs. ``only`` runs just those batch indices (racing); other entries are
        0. Under torch.distributed each process runs its share of the batches
        (:mod:`layershear.engine.distributed`) and the results are summed across processes (not with
        ``reduce=False``: the caller sums); ``stats`` count this process's share.
        """
        drop = frozenset(drop)
        todo = my_share(list(range(len(self.batches))) if only is None else list(only))
        self.stats.count([self._shapes[j] for j in todo], blocks_run=self.num_blocks - len(drop))
        out = torch.zeros(len(self.requests), dtype=torch.float64)
        full_logits = not self.engine.scored_head
        with (drop_blocks(self.model, drop), fused_kernels(self.fusion),
              (hook(self.model) if hook else contextlib.nullcontext())):
            for done, j in enumerate(todo, 1):
                batch = self.batches[j]
                for cache in caches:
                    cache.batch = j
                if isinstance(batch, PackedBatch):
                    out[list(batch.requests)] = packed_loglikelihoods(self.model, batch, pad_id=self.pad_id,
                                                                      full_logits=full_logits)
                else:
                    out[batch] = batch_loglikelihoods(self.model, [self.requests[k] for k in batch],
                                                      max_length=self.max_length, pad_id=self.pad_id,
                                                      full_logits=full_logits)
                if self.on_progress is not None:
                    self.on_progress(label, done, len(todo))
        return sum_across(out, next(self.model.parameters()).device) if reduce else out

    def evaluate(self, drop: Iterable[int] = ()) -> Evaluation:
        """Acc(f_-drop, D): calibration accuracy with the blocks in ``drop`` removed (memoised)."""
        key = frozenset(drop)
        if key not in self._cache and self.engine.skip_prefix and self._prefix is None:
            self._prefix_for(key)          # the first evaluation also caches its block inputs
        if key not in self._cache:
            self._store(key, self.loglikelihoods(key, label=f"without {sorted(key)}" if key else "full model"))
        return self._cache[key]

    def _evaluation(self, drop: frozenset[int], lls: torch.Tensor, items: Sequence[int] | None = None) -> Evaluation:
        """Evaluation from per-request ``lls``; on the item indices ``items`` only (a racing estimate) if given."""
        return evaluation(drop, self.items, self.metrics, self.item_requests, lls, items)

    def evaluate_children(self, drop: Iterable[int], blocks: Iterable[int]) -> dict[int, Evaluation]:
        """Acc(f_-b, D) for each block b still in f = the model with ``drop`` removed (memoised).

        With the ``fast`` engine, one forward of f captures every block's input, and candidate b runs
        only the blocks after b from the cached input of b (see :mod:`layershear.engine.prefix_cache`).

        Returns:
            block index -> evaluation of f without that block, in the order of ``blocks``.
        """
        parent, blocks = frozenset(drop), list(blocks)
        missing = [b for b in blocks if parent | {b} not in self._cache and parent | {b} not in self._raced]
        if missing and self.race is not None and len(missing) > self.race.keep:
            self._race_children(parent, missing)
        elif missing and self.engine.skip_prefix:
            known = [self._cache[parent | {b}] for b in blocks if b not in missing and parent | {b} in self._cache]
            self._children_from_prefix(parent, missing, known)
        return {b: self._raced.get(parent | {b}) or self.evaluate(parent | {b}) for b in blocks}

    def _children_from_prefix(self, parent: frozenset[int], missing: list[int], known: Sequence[Evaluation] = ()) -> None:
        reuse = self.step_reuse
        order = reuse.start(parent, missing, known) if reuse else missing    # frees dead states first
        cache = self._prefix_for(parent)
        for group in self._groups(parent, order):
            planned = {b: self._plan_child(cache, parent, b) for b in group}
            members = {b: m for b, (run, stored, m) in planned.items() if m is not None}
            lls = {}
            if len(group) > 1 and any(m.first is not None for m in members.values()):
                lls = self._stacked(parent, members)
            for b, (run, _, _) in planned.items():
                if b not in lls:
                    lls[b] = self.loglikelihoods(run.skipped, label=f"without {sorted(parent | {b})}", caches=run.caches,
                                                 hook=run.hook, reduce=False)
            # one sum over processes per group, whatever each process ran locally
            summed = sum_across(torch.stack([lls[b] for b in group]), next(self.model.parameters()).device)
            for b, row in zip(group, summed):
                drop = parent | {b}
                self._store(drop, row)
                if reuse:
                    reuse.record(b, self._cache[drop], planned[b][1])
            self.stats.cache_bytes = max(self.stats.cache_bytes, cache.nbytes + (reuse.nbytes if reuse else 0))

    def _groups(self, parent: frozenset[int], order: list[int]) -> list[list[int]]:
        """Candidates in run order, split into the groups that share stacked passes (one each
        without stacking). While step reuse stores states, at least two groups, so the lower
        candidates guess the removed block from the scores of the higher ones."""
        if not self.engine.stack_tokens or not self.packed or self.cache_plan.every != 1:
            return [[b] for b in order]
        storing = self.step_reuse is not None and len(parent) + 1 < self.step_reuse.until_depth
        widest = max(s.rows * s.width for s in self._shapes)
        return stack_groups(order, widest, self.engine.stack_tokens, min_groups=2 if storing else 1)

    def _plan_child(self, cache: BlockInputs, parent: frozenset[int], b: int) -> tuple[Run, BlockInputs | None,
                                                                                         StackMember | None]:
        """How to run candidate ``b``: its run on its own (from the prefix cache or a state stored by
        step reuse, storing the states step reuse asks for), where those states go (None: nowhere),
        and its member in a stacked pass, which stores them itself (None: it cannot share one, e.g.
        it recomputes blocks from a checkpoint)."""
        drop, reuse = parent | {b}, self.step_reuse
        run = child_run(cache, parent, b, self.num_blocks)
        found = reuse.lookup(drop, after=b) if reuse else None
        from_state = stored_run(drop, *found, self.num_blocks) if found else None
        if from_state is not None and len(from_state.skipped) > len(run.skipped):     # runs fewer blocks
            run = from_state
            self.stats.reused_runs += 1
        ran = [k for k in range(self.num_blocks) if k not in run.skipped and not run.bypass]
        stored = None
        if reuse:
            targets = reuse.targets(drop, b, ran, self.num_blocks)
            if targets:
                stored = BlockInputs(drop, where=self.cache_plan.where, stored=targets)
        member = None
        if stored is not None:
            run = run.capturing(ran, stored)
        if run.source is not None and (run.bypass or ran == [k for k in range(ran[0], self.num_blocks) if k not in parent]):
            inputs, k = run.source
            member = StackMember(None if run.bypass else ran[0], lambda j, inputs=inputs, k=k: inputs.states[k][j],
                                 capture=stored)
        return run, stored, member

    def _stacked(self, parent: frozenset[int], members: dict[int, StackMember]) -> dict[int, torch.Tensor]:
        """Per-request log-likelihoods of the candidates ``members`` (block -> member), run together
        in stacked passes (:mod:`layershear.engine.stacking`); this process's share of the batches, not
        summed across processes."""
        start = min(m.first for m in members.values() if m.first is not None)
        kept = [k for k in range(self.num_blocks) if k not in parent and k >= start]
        todo = my_share(list(range(len(self.batches))))
        shapes = [self._shapes[j] for j in todo]
        for m in members.values():
            self.stats.count(shapes, blocks_run=0 if m.first is None else len([k for k in kept if k >= m.first]),
                             passes=False)
        self.stats.forward_passes += len(todo)
        self.stats.stacked_runs += len(members)
        blocks = list(members)
        out = torch.zeros(len(blocks), len(self.requests), dtype=torch.float64)
        label = f"without {sorted(parent)} and one of {min(blocks)}..{max(blocks)} ({len(blocks)} stacked)"
        skipped = frozenset(range(self.num_blocks)) - set(kept)
        with (drop_blocks(self.model, skipped), fused_kernels(self.fusion),
              stacking(self.model, kept, list(members.values())) as stack):
            for done, j in enumerate(todo, 1):
                stack.reset(j)
                batch = self.batches[j]
                lls = packed_loglikelihoods(self.model, batch, pad_id=self.pad_id,
                                            full_logits=not self.engine.scored_head, copies=len(blocks))
                for i, b in enumerate(blocks):
                    out[i, list(batch.requests)] = lls[members[b].order]
                if self.on_progress is not None:
                    self.on_progress(label, done * len(blocks), len(todo) * len(blocks))
        return {b: out[i] for i, b in enumerate(blocks)}

    def _race_children(self, parent: frozenset[int], missing: list[int]) -> None:
        """Score ``missing`` slice by slice; after each slice drop the candidates that ``race.keep``
        others beat with confidence (see :mod:`layershear.scoring.racing`); the rest are scored on all of D."""
        race = self.race
        cache = self._prefix_for(parent) if self.engine.skip_prefix else None
        delta = per_test_delta(race, len(missing))
        lls = {b: torch.full((len(self.requests),), float("nan"), dtype=torch.float64) for b in missing}
        alive, seen = list(missing), []
        for sl, batch_ids in enumerate(self.slice_batches):
            for b in alive:
                run = child_run(cache, parent, b, self.num_blocks)
                out = self.loglikelihoods(run.skipped, label=f"without {sorted(parent | {b})} (slice {sl + 1})",
                                          caches=run.caches, hook=run.hook, only=batch_ids)
                index = [k for j in batch_ids for k in self._requests_of(self.batches[j])]
                lls[b][index] = out[index]
            seen += [i for i, x in enumerate(self.item_slice) if x == sl]
            if sl == len(self.slice_batches) - 1:
                break
            partial = {b: self._evaluation(parent | {b}, lls[b], seen) for b in alive}
            for b in eliminated({b: torch.tensor(ev.correct) for b, ev in partial.items()}, total=len(self.items),
                                delta=delta, keep=race.keep):
                self._raced[parent | {b}] = partial[b]
                alive.remove(b)
        for b in alive:
            self._store(parent | {b}, lls[b])

    def _prefix_for(self, parent: frozenset[int]) -> BlockInputs:
        """Cached block inputs of f = model without ``parent`` (the blocks :attr:`cache_plan` keeps),
        derived from the previous step's cache when ``parent`` adds one block b to it: the inputs
        before b are the same; those after b come from b's own run when step reuse stored them (or
        there are none, b being the last block), else from a pass over the blocks from the last
        checkpoint before b on. Otherwise one full pass."""
        old = self._prefix
        if old is not None and old.drop == parent:
            return old
        kept = [k for k in range(self.num_blocks) if k not in parent]
        store = set(self.cache_plan.checkpoints(kept))
        new = BlockInputs(parent, where=self.cache_plan.where, stored=sorted(store))
        added = parent - old.drop if old is not None and old.drop < parent else set()
        if len(added) == 1:
            (b,) = added
            new.states = {k: old.states[k] for k in store if k < b}     # same checkpoints before b
            after = {k for k in store if k > b}
            taken = self.step_reuse.take_prefix(parent, after) if self.step_reuse else {}
            device = next(self.model.parameters()).device
            if min_across((int(set(taken) == after and parent in self._cache),), device)[0]:   # all processes
                # b was the last block, or its run stored the states after it (step reuse): no pass
                new.states.update(taken)
                self.stats.reused_prefixes += bool(after)
                self._prefix = new
                return new
        if len(added) == 1 and b < kept[-1]:
            start = old.checkpoint_before(b)
            run = Run(parent | {k for k in kept if k < start}, lambda m: injecting(m, old, start), caches=(old,))
            run = run.capturing([k for k in kept if k >= start], new, after)
        else:
            run = Run(parent).capturing(kept, new)
        lls = self.loglikelihoods(run.skipped, label=f"caching block inputs without {sorted(parent)}", hook=run.hook,
                                  caches=run.caches)
        self._store(parent, lls)
        self._prefix = new
        self.stats.cache_bytes = max(self.stats.cache_bytes, new.nbytes + (old.nbytes if old else 0)
                                     + (self.step_reuse.nbytes if self.step_reuse else 0))
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

