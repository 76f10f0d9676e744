"""LoglikelihoodEngine: per-request log-likelihoods of a model with any set of decoder blocks removed.

The seam is lm-evaluation-harness's ``LM.loglikelihood(requests)``: (context, continuation)
requests in, the summed log-probability of each continuation out (nats; lm-eval also returns
``is_greedy``, which no layershear score uses). :func:`loglikelihood` is that call for one model;
:class:`LoglikelihoodEngine` serves many models that differ only in their removed blocks, on one
fixed request set, so that the layout is built once and the block inputs one model computed serve
the next (:mod:`layershear.engine.prefix_cache`, :mod:`layershear.engine.step_reuse`,
:mod:`layershear.engine.stacking`). Blocks are removed in memory (no weights copied or reloaded).
Every switch of :class:`layershear.engine.config.EngineConfig` gives the same numbers up to
floating-point rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence

import torch

from layershear.engine.config import EngineConfig, engine_config
from layershear.engine.distributed import min_across, my_share, sum_across
from layershear.engine.forward import InFlight, batch_loglikelihoods, model_devices, pipeline_depth
from layershear.engine.fused import Fusion, fused_kernels
from layershear.engine.layout import build_layout, requests_in
from layershear.engine.packing import PackedBatch, packable, packed_loglikelihoods
from layershear.engine.prefix_cache import BlockInputs, CachePlan, free_memory, injecting, plan_cache
from layershear.engine.requests import Request, check_lengths, default_max_length, encode_requests
from layershear.engine.runs import Run, child_run, stored_run
from layershear.engine.stacking import StackMember, stack_groups, stacking
from layershear.engine.step_reuse import StepReuse
from layershear.engine.work import BatchShape, EngineStats, FlopModel
from layershear.errors import ScoringError
from layershear.model.arch import decoder_blocks
from layershear.model.surgery import remove_blocks

LOG = logging.getLogger(__name__)

#: on_progress(label, done, total): called after every forward batch; ``done`` and ``total`` count
#: batches of one candidate, so a stacked pass of C candidates (:mod:`layershear.engine.stacking`) advances C.
ProgressFn = Callable[[str, int, int], None]
#: rank(block, loglikelihoods) -> key: the search's order of a parent's children (lower = better),
#: from the child's per-request log-likelihoods; step reuse stores states for the best ones so far.
RankFn = Callable[[int, torch.Tensor], tuple]
#: eliminate(slice, loglikelihoods) -> blocks: after racing slice ``slice``, the candidates to stop
#: scoring, from each alive candidate's log-likelihoods (NaN on the slices not scored yet).
EliminateFn = Callable[[int, dict[int, torch.Tensor]], Iterable[int]]
#: the same over arbitrary removal sets: eliminate(slice, {removed set: loglikelihoods}) -> sets to drop
EliminateSetsFn = Callable[[int, dict[frozenset[int], torch.Tensor]], Iterable[frozenset[int]]]


class LoglikelihoodEngine:
    """Per-request log-likelihoods of ``model`` with any blocks removed, on a fixed set of requests.

    Args:
        model: a loaded causal LM (any architecture :mod:`layershear.model.arch` supports), in eval mode.
        tokenizer: its tokenizer.
        requests: the (context, continuation) requests (:func:`layershear.engine.requests.requests_of`
            builds them from multiple-choice items).
        batch_size: sequences per forward pass (lm-eval layout); packed batches hold at most as many
            tokens as ``batch_size`` sequences of the longest request.
        max_length: left-truncation length in tokens; None = the model's context length (lm-eval).
        add_bos: prepend BOS to every context (models trained to always see one, e.g. Gemma).
        engine: ``fast`` (default), ``reference`` (see :data:`layershear.engine.config.ENGINES`) or
            an :class:`EngineConfig`; all give the same numbers up to floating-point rounding (in
            fp32 to about 1e-5; in bf16 batch shapes, stacking and fused kernels round differently).
        on_progress: progress callback, see :data:`ProgressFn`.
        cache_plan: where and how densely block inputs are cached (``skip_prefix``); None = chosen
            by measured free memory (:func:`layershear.engine.prefix_cache.plan_cache`).
        slices: racing slice (0, 1, ...) of every request; each slice is laid out on its own so that
            :meth:`race` and :meth:`race_sets` can score one slice at a time. None = one slice.
        racing: whether the children of a parent are raced (then step reuse is off: a raced child
            runs only some slices); None = whenever ``slices`` is given.

    Raises:
        ScoringError: no requests, unknown engine, a continuation longer than ``max_length``.
    """

    def __init__(self, model, tokenizer, requests: Sequence[Request], *, batch_size: int = 16,
                 max_length: int | None = None, add_bos: bool = False, engine: str | EngineConfig = "fast",
                 on_progress: ProgressFn | None = None, cache_plan: CachePlan | None = None,
                 slices: Sequence[int] | None = None, racing: bool | None = None) -> None:
        if not requests:
            raise ScoringError("There are no requests to score; give at least one document")
        self.config = engine_config(engine)
        self.model = model
        self.requests = encode_requests(requests, tokenizer, add_bos=add_bos)
        self.max_length = max_length or default_max_length(model)
        check_lengths(self.requests, self.max_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.num_blocks = len(decoder_blocks(model))
        self.depth = pipeline_depth(model)        # batches in flight (forward.InFlight)
        self.slices = list(slices) if slices is not None else [0] * len(self.requests)
        self.fusion = Fusion.of(model) if self.config.fused_kernels else Fusion()
        self.packed = self.config.packed and packable(model)
        if self.config.packed and not self.packed:
            LOG.warning("%s: packed rows / shared contexts are not tested for this architecture; scoring unpacked",
                        model.config.model_type)
        self.layout = build_layout(self.requests, packed=self.packed, config=self.config, batch_size=batch_size,
                                   max_length=self.max_length, flops=FlopModel.of(model), num_blocks=self.num_blocks,
                                   slices=self.slices)
        self.on_progress = on_progress
        self.stats = EngineStats()
        self._exact: dict[frozenset[int], torch.Tensor] = {}     # removed blocks -> log-likelihoods
        self._prefix: BlockInputs | None = None   # block inputs of the last parent whose children were scored
        self.cache_plan: CachePlan | None = None
        self.step_reuse: StepReuse | None = None
        if self.config.skip_prefix:
            self._plan_caches(cache_plan, racing=slices is not None if racing is None else racing)

    def _state_bytes(self, *, largest_across: bool = True) -> int:
        """Bytes of one hidden state per batch over this process's share of the batches (all of them
        for one process): tokens x hidden x dtype, one block's input or one model's states between
        blocks. ``largest_across``: the largest share over processes, so that every process plans alike."""
        embeddings = self.model.get_input_embeddings().weight
        mine = sum(self.layout.shapes[j].rows * self.layout.shapes[j].width for j in my_share(list(range(len(self.batches)))))
        nbytes = mine * embeddings.shape[1] * embeddings.element_size()
        return -min_across((-nbytes,), embeddings.device)[0] if largest_across else nbytes

    def _plan_caches(self, cache_plan: CachePlan | None, *, racing: bool) -> None:
        embeddings = self.model.get_input_embeddings().weight
        block_bytes = self._state_bytes(largest_across=cache_plan is None)
        if cache_plan is None:
            free = min_across(free_memory(embeddings.device, model_devices(self.model)), embeddings.device)
            cache_plan = plan_cache(block_bytes, self.num_blocks, embeddings.device, free=free)
        self.cache_plan = cache_plan
        if self.config.step_reuse and not racing:
            self.step_reuse = StepReuse(block_bytes=block_bytes, where=self.cache_plan.where,
                                        every=self.cache_plan.every,
                                        budget_bytes=self.cache_plan.budget_bytes - self.cache_plan.planned_bytes)

    @property
    def batches(self) -> tuple:
        """The forward passes over the requests (:class:`layershear.engine.layout.Layout`)."""
        return self.layout.batches

    @property
    def slice_batches(self) -> tuple[tuple[int, ...], ...]:
        """Indices of the batches of each racing slice."""
        return self.layout.slice_batches

    @property
    def row_tokens(self) -> int | None:
        """Packed row width in use (None: lm-eval rows)."""
        return self.layout.row_tokens

    @property
    def batch_shapes(self) -> list[BatchShape]:
        """Shape of every forward pass over the requests (rows, width, real tokens, ...)."""
        return list(self.layout.shapes)

    @property
    def num_tokens(self) -> int:
        """Tokens one pass over the requests feeds through the model (without padding or sharing)."""
        return sum(r.num_tokens for r in self.requests)

    @property
    def models_scored(self) -> int:
        """Distinct sets of removed blocks whose exact log-likelihoods were computed."""
        return len(self._exact)

    def describe(self, *, steps: int = 1) -> list[str]:
        """The plan, one line each: the batch layout, the prefix cache, the fused kernels, and step
        reuse (for searches of more than one step)."""
        shapes = self.layout.shapes
        rows = sum(s.rows for s in shapes)
        padded = sum(s.rows * s.width for s in shapes)
        real = sum(s.real_tokens for s in shapes)
        layout = f"packed prefix-tree rows of {self.row_tokens} tokens" if self.packed else "one request per row"
        lines = [f"layout: {layout}; {len(self.batches)} batches, {rows} rows, {real:,} tokens computed per pass for "
                 f"{self.num_tokens:,} request tokens, padding {1 - real / padded:.1%}"]
        if self.cache_plan is not None:
            lines.append(self.cache_plan.describe())
        if self.config.fused_kernels:
            lines.append(self.fusion.describe())
        if self.step_reuse is not None and steps > 1:
            lines.append(self.step_reuse.describe())
        return lines

    def cost(self) -> dict:
        """The work done so far and the plan it followed, for ``layershear.json``."""
        reuse = self.step_reuse
        return {"engine": dataclasses.asdict(self.config), "row_tokens": self.row_tokens,
                "padding_fraction": self.stats.padding_fraction,
                "cache_plan": dataclasses.asdict(self.cache_plan) if self.cache_plan else None,
                "fused_kernels": self.fusion.summary() if self.config.fused_kernels else None,
                "step_reuse": {"budget_bytes": reuse.budget_bytes, "guesses": reuse.guesses} if reuse else None,
                "models_scored": self.models_scored, "tokens_per_model": self.num_tokens,
                **dataclasses.asdict(self.stats)}

    def is_scored(self, removed: Iterable[int]) -> bool:
        """Whether the exact log-likelihoods of the model without ``removed`` are memoised."""
        return frozenset(removed) in self._exact

    def expect(self, *, width: int, depth: int) -> None:
        """A search's hints for step reuse: ``width`` children expanded per depth, ``depth`` removals."""
        if self.step_reuse is not None:
            self.step_reuse.expect(width=width, depth=depth)

    def run(self, removed: Iterable[int] = (), *, label: str = "", hook=None, caches: Sequence[BlockInputs] = (),
            only: Sequence[int] | None = None, reduce: bool = True) -> torch.Tensor:
        """One pass over the requests with ``removed`` taken out; not memoised.

        ``hook`` is a context manager factory ``hook(model)`` entered inside ``remove_blocks`` (used
        to capture or inject block inputs); ``cache.batch`` of each of ``caches`` is set to the
        index of each batch before it runs. ``only`` runs just those batch indices (racing); other
        entries are 0. Under torch.distributed each process runs its share of the batches
        (:mod:`layershear.engine.distributed`) and the results are summed across processes (not
        with ``reduce=False``: the caller sums); ``stats`` count this process's share.

        Returns:
            float64 ``[num_requests]`` summed continuation log-probabilities (nats), on CPU.
        """
        removed = frozenset(removed)
        todo = my_share(list(range(len(self.batches))) if only is None else list(only))
        self.stats.count([self.layout.shapes[j] for j in todo], blocks_run=self.num_blocks - len(removed))
        results = InFlight(torch.zeros(len(self.requests), dtype=torch.float64), self.depth)
        full_logits = not self.config.scored_head
        with (remove_blocks(self.model, removed), fused_kernels(self.fusion),
              (hook(self.model) if hook else contextlib.nullcontext())):
            for done, j in enumerate(todo, 1):
                batch = self.batches[j]
                for cache in caches:
                    cache.batch = j
                if isinstance(batch, PackedBatch):
                    results.put(list(batch.requests), packed_loglikelihoods(
                        self.model, batch, pad_id=self.pad_id, full_logits=full_logits, to_host=False))
                else:
                    results.put(batch, batch_loglikelihoods(
                        self.model, [self.requests[k] for k in batch], max_length=self.max_length,
                        pad_id=self.pad_id, full_logits=full_logits, to_host=False))
                if self.on_progress is not None:
                    self.on_progress(label, done, len(todo))
            out = results.drain()
        return sum_across(out, next(self.model.parameters()).device) if reduce else out

    def loglikelihood(self, removed: Iterable[int] = ()) -> torch.Tensor:
        """Log-likelihoods of every request with ``removed`` taken out (memoised).

        With ``skip_prefix`` the first call also caches the block inputs of its model.

        Returns:
            float64 ``[num_requests]``, nats.
        """
        key = frozenset(removed)
        if key not in self._exact and self.config.skip_prefix and self._prefix is None:
            self._prefix_for(key)          # the first model scored also caches its block inputs
        if key not in self._exact:
            run = self.run_for(key)
            self.stats.shared_starts += run.source is not None
            self._store(key, self.run(run.skipped, label=f"without {sorted(key)}" if key else "full model",
                                      hook=run.hook, caches=run.caches))
        return self._exact[key]

    def run_for(self, removed: Iterable[int]) -> Run:
        """How to compute the model without ``removed``, an arbitrary set (a search may visit sets that
        are not children of the last parent): from the deepest cached block input that this model
        shares, else a full forward.

        The input entering block k is the same in two models whose removed blocks below k are the
        same (:func:`layershear.engine.step_reuse.state_key`). Looked up: the prefix cache of the
        last parent (the models without P share every input up to the first block where ``removed``
        and P differ) and the states step reuse stored. The run then computes only the model's
        blocks from k on; the numbers are those of a full forward on the same batches.
        """
        removed = frozenset(removed)
        best = Run(removed)
        options = []
        cache = self._prefix
        usable = cache.shared_with(removed) if cache is not None else []
        if usable:
            options.append((max(usable), cache))
        if self.step_reuse is not None:
            found = self.step_reuse.lookup(removed, after=-1)
            if found is not None:
                options.append(found)
        for k, inputs in options:
            run = stored_run(removed, k, inputs, self.num_blocks)
            if run is not None and len(run.skipped) > len(best.skipped):
                best = run
        return best

    def anchor(self, removed: Iterable[int]) -> None:
        """Cache the block inputs of the model without ``removed`` (the prefix cache), so that the
        sets scored next start from them (:meth:`run_for`): an evolutionary search anchors its
        current best set, whose offspring differ from it by a swap."""
        if self.config.skip_prefix:
            self._prefix_for(frozenset(removed))

    def children(self, parent: Iterable[int], blocks: Iterable[int], *, rank: RankFn) -> dict[int, torch.Tensor]:
        """Log-likelihoods of f without b, for each block b of ``blocks`` still in f = the model
        without ``parent`` (memoised).

        With ``skip_prefix``, one forward of f captures every block's input, and candidate b runs
        only the blocks after b from the cached input of b (see :mod:`layershear.engine.prefix_cache`);
        ``rank`` orders the children for step reuse.

        Returns:
            block index -> float64 ``[num_requests]``, in the order of ``blocks``.
        """
        parent, blocks = frozenset(parent), list(blocks)
        missing = [b for b in blocks if parent | {b} not in self._exact]
        if missing and self.config.skip_prefix:
            known = [(rank(b, self._exact[parent | {b}]), b) for b in blocks if b not in missing]
            self._children_from_prefix(parent, missing, known, rank)
        return {b: self.loglikelihood(parent | {b}) for b in blocks}

    def _children_from_prefix(self, parent: frozenset[int], missing: list[int], known: list[tuple[tuple, int]],
                              rank: RankFn) -> None:
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
                    lls[b] = self.run(run.skipped, label=f"without {sorted(parent | {b})}", caches=run.caches,
                                      hook=run.hook, reduce=False)
            # one sum over processes per group, whatever each process ran locally
            summed = sum_across(torch.stack([lls[b] for b in group]), next(self.model.parameters()).device)
            for b, row in zip(group, summed):
                self._store(parent | {b}, row)
                if reuse:
                    reuse.record(b, rank(b, row), planned[b][1])
            self.stats.cache_bytes = max(self.stats.cache_bytes, cache.nbytes + (reuse.nbytes if reuse else 0))

    def _groups(self, parent: frozenset[int], order: list[int]) -> list[list[int]]:
        """Candidates in run order, split into the groups that share stacked passes (one each
        without stacking). While step reuse stores states, at least two groups, so the lower
        candidates guess the removed block from the scores of the higher ones."""
        if not self.config.stack_tokens or not self.packed or self.cache_plan.every != 1:
            return [[b] for b in order]
        storing = self.step_reuse is not None and len(parent) + 1 < self.step_reuse.until_depth
        widest = max(s.rows * s.width for s in self.layout.shapes)
        return stack_groups(order, widest, self.config.stack_tokens, min_groups=2 if storing else 1)

    def _plan_child(self, cache: BlockInputs, parent: frozenset[int], b: int) -> tuple[Run, BlockInputs | None,
                                                                                         StackMember | None]:
        """How to run candidate ``b``: its run on its own (from the prefix cache or a state stored by
        step reuse, storing the states step reuse asks for), where those states go (None: nowhere),
        and its member in a stacked pass, which stores them itself (None: it cannot share one, e.g.
        it recomputes blocks from a checkpoint)."""
        removed, reuse = parent | {b}, self.step_reuse
        run = child_run(cache, parent, b, self.num_blocks)
        found = reuse.lookup(removed, after=b) if reuse else None
        from_state = stored_run(removed, *found, self.num_blocks) if found else None
        if from_state is not None and len(from_state.skipped) > len(run.skipped):     # runs fewer blocks
            run = from_state
            self.stats.reused_runs += 1
        ran = [k for k in range(self.num_blocks) if k not in run.skipped and not run.bypass]
        stored = None
        if reuse:
            targets = reuse.targets(removed, b, ran, self.num_blocks)
            if targets:
                stored = BlockInputs(removed, where=self.cache_plan.where, stored=targets)
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
        in stacked passes (:mod:`layershear.engine.stacking`); this process's share of the batches,
        not summed across processes."""
        start = min(m.first for m in members.values() if m.first is not None)
        kept = [k for k in range(self.num_blocks) if k not in parent and k >= start]
        todo = my_share(list(range(len(self.batches))))
        shapes = [self.layout.shapes[j] for j in todo]
        for m in members.values():
            self.stats.count(shapes, blocks_run=0 if m.first is None else len([k for k in kept if k >= m.first]),
                             passes=False)
        self.stats.forward_passes += len(todo)
        self.stats.stacked_runs += len(members)
        blocks = list(members)
        results = InFlight(torch.zeros(len(blocks), len(self.requests), dtype=torch.float64), self.depth)
        label = f"without {sorted(parent)} and one of {min(blocks)}..{max(blocks)} ({len(blocks)} stacked)"
        skipped = frozenset(range(self.num_blocks)) - set(kept)
        with (remove_blocks(self.model, skipped), fused_kernels(self.fusion),
              stacking(self.model, kept, list(members.values())) as stack):
            for done, j in enumerate(todo, 1):
                stack.reset(j)
                batch = self.batches[j]
                lls = packed_loglikelihoods(self.model, batch, pad_id=self.pad_id,
                                            full_logits=not self.config.scored_head, copies=len(blocks), to_host=False)
                results.put((slice(None), list(batch.requests)), lls[[members[b].order for b in blocks]])
                if self.on_progress is not None:
                    self.on_progress(label, done * len(blocks), len(todo) * len(blocks))
            out = results.drain()
        return {b: out[i] for i, b in enumerate(blocks)}

    def race(self, parent: Iterable[int], blocks: Sequence[int], eliminate: EliminateFn) -> dict[int, torch.Tensor]:
        """Score the children f without b (b in ``blocks``, f = the model without ``parent``) slice by
        slice (see ``slices``); after every slice but the last, ``eliminate`` names the candidates
        to stop scoring (:mod:`layershear.scoring.racing` decides). The others are scored on every
        slice, so their log-likelihoods are exact (and memoised).

        Returns:
            block -> float64 ``[num_requests]`` of the candidates scored on every slice.
        """
        parent = frozenset(parent)
        if self.config.skip_prefix:
            self._prefix_for(parent)
        sets = {parent | {b}: b for b in blocks}
        out = self.race_sets(list(sets), lambda sl, lls: {parent | {b} for b in eliminate(sl, {sets[r]: v for r, v in lls.items()})},
                             count_shared=False)
        return {sets[r]: v for r, v in out.items()}

    def race_sets(self, sets: Sequence[frozenset[int]], eliminate: EliminateSetsFn,
                  slices: int | None = None, *, count_shared: bool = True) -> dict[frozenset[int], torch.Tensor]:
        """Score the models without each of ``sets`` (arbitrary removal sets) slice by slice, each
        from its deepest cached block input (:meth:`run_for`); after every slice but the last,
        ``eliminate(slice, lls)`` names the sets to stop scoring. ``slices``: score only the first
        this many slices (None: all); a set is memoised as exact only when it ran every slice.
        ``count_shared``: count the sets that start from a shared cached input in
        ``stats.shared_starts`` (:meth:`race` does not: its children start from their parent's cache).

        Returns:
            removed set -> float64 ``[num_requests]`` (NaN on slices not run) of the sets still alive.
        """
        last = len(self.slice_batches) if slices is None else min(slices, len(self.slice_batches))
        lls = {r: torch.full((len(self.requests),), float("nan"), dtype=torch.float64) for r in map(frozenset, sets)}
        alive = list(lls)
        runs = {r: self.run_for(r) for r in alive}
        if count_shared:
            self.stats.shared_starts += sum(run.source is not None for run in runs.values())
        for sl, batch_ids in enumerate(self.slice_batches[:last]):
            index = [k for j in batch_ids for k in requests_in(self.batches[j])]
            for r, out in self._slice_scores(alive, runs, sl, batch_ids).items():
                lls[r][index] = out[index]
            if sl == last - 1:
                break
            for r in list(eliminate(sl, {r: lls[r] for r in alive})):
                alive.remove(r)
        if last == len(self.slice_batches):
            for r in alive:
                self._store(r, lls[r])
        return {r: lls[r] for r in alive}

    def _slice_scores(self, alive: Sequence[frozenset[int]], runs: dict[frozenset[int], Run], sl: int,
                      batch_ids: Sequence[int]) -> dict[frozenset[int], torch.Tensor]:
        """Log-likelihoods of the sets ``alive`` on racing slice ``sl`` (its batches ``batch_ids``),
        each by its run; ``[num_requests]`` rows, meaningful on that slice's requests."""
        return {r: self.run(runs[r].skipped, label=f"without {sorted(r)} (slice {sl + 1})", caches=runs[r].caches,
                            hook=runs[r].hook, only=batch_ids) for r in alive}

    def _prefix_for(self, parent: frozenset[int]) -> BlockInputs:
        """Cached block inputs of f = model without ``parent`` (the blocks :attr:`cache_plan` keeps),
        derived from the previous step's cache when ``parent`` adds one block b to it: the inputs
        before b are the same; those after b come from b's own run when step reuse stored them (or
        there are none, b being the last block), else from a pass over the blocks from the last
        checkpoint before b on. Otherwise one full pass."""
        old = self._prefix
        if old is not None and old.removed == parent:
            return old
        kept = [k for k in range(self.num_blocks) if k not in parent]
        store = set(self.cache_plan.checkpoints(kept))
        new = BlockInputs(parent, where=self.cache_plan.where, stored=sorted(store))
        added = parent - old.removed if old is not None and old.removed < parent else set()
        if len(added) == 1:
            (b,) = added
            new.states = {k: old.states[k] for k in store if k < b}     # same checkpoints before b
            after = {k for k in store if k > b}
            taken = self.step_reuse.take_prefix(parent, after) if self.step_reuse else {}
            device = next(self.model.parameters()).device
            if min_across((int(set(taken) == after and parent in self._exact),), device)[0]:   # all processes
                # b was the last block, or its run stored the states after it (step reuse): no pass
                new.states.update(taken)
                self.stats.reused_prefixes += bool(after)
                self._prefix = new
                return new
        if len(added) == 1 and b < kept[-1]:
            start = old.checkpoint_before(b)
            run = Run(parent | {k for k in kept if k < start}, lambda m: injecting(m, old, start), caches=(old,))
            run = run.capturing([k for k in kept if k >= start], new, after)
        elif old is not None and (start := self._shared_start(old, parent, kept)) is not None:
            # any other parent (a backtracking search): the inputs below the first block where the two
            # models differ are the same; run from the deepest of them
            new.states = {k: old.states[k] for k in store if k < start}
            run = Run(parent | {k for k in kept if k < start}, lambda m: injecting(m, old, start), caches=(old,))
            run = run.capturing([k for k in kept if k >= start], new, {k for k in store if k >= start})
        else:
            run = Run(parent).capturing(kept, new)
        lls = self.run(run.skipped, label=f"caching block inputs without {sorted(parent)}", hook=run.hook,
                       caches=run.caches)
        self._store(parent, lls)
        self._prefix = new
        self.stats.cache_bytes = max(self.stats.cache_bytes, new.nbytes + (old.nbytes if old else 0)
                                     + (self.step_reuse.nbytes if self.step_reuse else 0))
        return new

    @staticmethod
    def _shared_start(old: BlockInputs, parent: frozenset[int], kept: list[int]) -> int | None:
        """The deepest block of ``old`` (the cache of another model) whose cached input the model
        without ``parent`` shares, with a block of that model at or after it; None if none saves work."""
        usable = [k for k in old.shared_with(parent) if kept[0] < k <= kept[-1]]
        return max(usable) if usable else None

    def _store(self, removed: frozenset[int], lls: torch.Tensor) -> None:
        self._exact.setdefault(removed, lls)


def loglikelihood(model, tokenizer, requests: Sequence[Request], *, removed: Iterable[int] = (),
                  batch_size: int = 16, max_length: int | None = None, add_bos: bool = False,
                  engine: str | EngineConfig = "fast", on_progress: ProgressFn | None = None,
                  label: str = "") -> torch.Tensor:
    """lm-eval's ``LM.loglikelihood(requests)`` for ``model`` without ``removed``: one pass, nothing cached.

    Args: as :class:`LoglikelihoodEngine`; ``label`` names the pass in ``on_progress``.

    Returns:
        float64 ``[len(requests)]``: each continuation's summed log-probability given its context (nats).

    Raises:
        ScoringError: as :class:`LoglikelihoodEngine`.
    """
    config = dataclasses.replace(engine_config(engine), skip_prefix=False, step_reuse=False)   # nothing to reuse
    return LoglikelihoodEngine(model, tokenizer, requests, batch_size=batch_size, max_length=max_length,
                               add_bos=add_bos, engine=config, on_progress=on_progress).run(removed, label=label)
