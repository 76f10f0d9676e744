"""StreamedEngine: the log-likelihood engine for models whose blocks do not fit on the device.

Same requests, layout and numbers as :class:`layershear.engine.loglikelihood.LoglikelihoodEngine`,
computed layer-major (:mod:`layershear.engine.layer_major`): each call scores all its models in
sweeps over the blocks, and a sweep brings each block's weights to the device once
(:class:`layershear.model.streaming.BlockStreamer`; two blocks resident at most, the current one and
the prefetched next). A greedy step is one sweep: the current model and all its candidates, each
candidate sharing the current model's states up to its removed block. Hidden states wait between
blocks on the device; when the states of all models of a call do not fit there, the models are
split over several sweeps, and only when not even one model's fit they wait in pinned host memory
(CUDA), or else on disk (:mod:`layershear.engine.spill`); :func:`plan_streaming` decides.

Under torch.distributed each process runs its share of the batches and the log-likelihoods are
summed across processes, as in the in-memory engine. Step reuse and candidate stacking do not
apply (there is no cross-step cache to reuse; the sweep already shares each block's weights among
all candidates).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from layershear.engine.config import engine_config
from layershear.engine.distributed import min_across, my_share, sum_across
from layershear.engine.forward import batch_loglikelihoods
from layershear.engine.fused import fused_kernels
from layershear.engine.layer_major import Tape, run_layer_major, standing_in
from layershear.engine.layout import requests_in
from layershear.engine.loglikelihood import LoglikelihoodEngine, RankFn
from layershear.engine.packing import PackedBatch, packed_loglikelihoods
from layershear.engine.prefix_cache import free_memory, pinned_copy
from layershear.engine.runs import Run
from layershear.engine.spill import SPILL_DIR_ENV, spill_dir, spilled
from layershear.errors import LayershearError
from layershear.model.streaming import BlockStreamer, WeightSource

#: tokens of final states stacked into one LM-head pass (packed layouts), unless the engine's
#: ``stack_tokens`` says otherwise
HEAD_TOKENS = 16384


@dataclass(frozen=True)
class StreamPlan:
    """Where hidden states wait between blocks and how many models share one sweep.

    ``where``: ``device``, ``host`` (pinned CPU memory, CUDA only) or ``disk`` (memory-mapped files
    in ``spill_dir``, :mod:`layershear.engine.spill`); ``models_per_sweep``: models scored in one
    sweep over the blocks at most (each holds one state per batch); ``state_bytes``: one model's
    states over this process's batches; ``budget_bytes``: the memory (or disk space) they had to fit in.
    """

    where: str
    models_per_sweep: int
    state_bytes: int
    budget_bytes: int
    spill_dir: str | None = None

    def describe(self) -> str:
        where = f"disk ({self.spill_dir})" if self.where == "disk" else self.where
        return (f"streamed blocks: 1 block's weights on the device at a time (+1 prefetched); hidden states of up to "
                f"{self.models_per_sweep} models per sweep on {where}, {self.state_bytes / 2**20:.1f} MiB each "
                f"(budget {self.budget_bytes / 2**30:.2f} GiB)")


def plan_streaming(state_bytes: int, models: int, device: torch.device, *, fraction: float = 0.5,
                   free: tuple[int, int] | None = None, disk: tuple[str, int] | None = None) -> StreamPlan:
    """Choose where states wait and how many models share a sweep, by measured free memory.

    States stay on the device whenever one model's fit: a sweep of m models recomputes the shared
    states of the current model once more per extra sweep (about 1/m more block work), while a
    state parked in host memory crosses the host link twice per block it runs (for a 70B block
    that is about 2 x 16 KiB per token against 1.7 GFLOP, hundreds of times slower than the compute).
    Disk, slower still, is the last resort.

    Args:
        state_bytes: bytes of one model's hidden states over the batches one process runs
            (tokens x hidden x dtype).
        models: the most models a call will score together (a greedy step: blocks + 1).
        device: the device blocks run on.
        fraction: share of free memory (and disk space) the states may use.
        free: (device, host) free bytes; measured when None (the least over processes).
        disk: (spill folder, its free bytes); None = :func:`layershear.engine.spill.spill_dir`,
            measured (only when neither memory holds one model's states).

    Returns:
        All ``models`` on the device if they fit; else as many as fit there (sweeps of that many);
        else (CUDA) as many as fit in pinned host memory; else as many as fit on disk.

    Raises:
        LayershearError: not even one model's states fit on disk.
    """
    if free is None:
        free = min_across(free_memory(device), device)
    dev_budget, host_budget = int(fraction * free[0]), int(fraction * free[1])
    one = max(1, state_bytes)
    if state_bytes * models <= dev_budget:
        return StreamPlan("device", models, state_bytes, dev_budget)
    if state_bytes <= dev_budget:
        return StreamPlan("device", dev_budget // one, state_bytes, dev_budget)
    if device.type == "cuda" and state_bytes <= host_budget:
        return StreamPlan("host", min(models, host_budget // one), state_bytes, host_budget)
    if disk is None:
        folder = spill_dir()
        disk = folder, min_across((shutil.disk_usage(folder).free,), device)[0] if os.path.isdir(folder) else 0
    folder, disk_budget = disk[0], int(fraction * disk[1])
    if state_bytes > disk_budget:
        raise LayershearError(
            f"the hidden states of one model need {state_bytes / 2**30:.2f} GiB; they fit neither in memory "
            f"(budget {max(dev_budget, host_budget) / 2**30:.2f} GiB) nor in {folder} ({disk_budget / 2**30:.2f} GiB "
            f"usable); set {SPILL_DIR_ENV} to a larger disk, or use fewer calibration documents or processes")
    return StreamPlan("disk", min(models, disk_budget // one), state_bytes, disk_budget, folder)


class StreamedEngine(LoglikelihoodEngine):
    """:class:`LoglikelihoodEngine` whose decoder blocks are streamed to the device one at a time.

    Args:
        model: a causal LM whose blocks' parameters are ``meta`` tensors
            (:func:`layershear.model.streaming.streamed_model`, or a loaded model after
            :class:`layershear.model.streaming.HostWeights` took its block weights).
        weights: where the blocks' weights are read from.
        stream_plan: where states wait and how many models share a sweep; None = chosen by measured
            free memory (:func:`plan_streaming`).
        on_load: called with the block index after each block's weights are installed.
        tokenizer, requests, and the rest: as :class:`LoglikelihoodEngine` (``engine``'s
            ``skip_prefix``, ``step_reuse`` and ``stack_tokens`` do not apply).

    Raises:
        ScoringError: as :class:`LoglikelihoodEngine`.
        LayershearError: the states of one model fit neither in memory nor on disk; no room left
            on the spill disk during a sweep.
    """

    def __init__(self, model, tokenizer, requests, *, weights: WeightSource, stream_plan: StreamPlan | None = None,
                 on_load: Callable[[int], None] | None = None, engine="fast", **kwargs) -> None:
        config = engine_config(engine)
        self.head_tokens = config.stack_tokens or HEAD_TOKENS
        config = dataclasses.replace(config, skip_prefix=False, step_reuse=False, stack_tokens=0)
        super().__init__(model, tokenizer, requests, engine=config, **kwargs)
        embeddings = model.get_input_embeddings().weight
        self.device, self.dtype = embeddings.device, embeddings.dtype
        self.weights, self.on_load = weights, on_load
        self.stream_plan = stream_plan or plan_streaming(self._state_bytes(), self.num_blocks + 1, self.device)
        self.block_loads = 0
        self.sweeps = 0
        self.peak_block_bytes = 0
        self.fetch_seconds = 0.0        # fetching blocks' weights, summed (the prefetch thread)
        self.wait_seconds = 0.0         # computing waited for a fetch

    def describe(self, *, steps: int = 1) -> list[str]:
        return [*super().describe(steps=steps), self.stream_plan.describe()]

    def cost(self) -> dict:
        return {**super().cost(), "streamed": {**dataclasses.asdict(self.stream_plan), "sweeps": self.sweeps,
                                               "block_loads": self.block_loads,
                                               "peak_block_bytes": self.peak_block_bytes,
                                               "fetch_seconds": round(self.fetch_seconds, 3),
                                               "wait_seconds": round(self.wait_seconds, 3)}}

    def _keep(self, state: torch.Tensor) -> torch.Tensor:
        if self.stream_plan.where == "host" and state.device.type != "cpu":
            return pinned_copy(state)
        if self.stream_plan.where == "disk":
            return spilled(state, self.stream_plan.spill_dir or spill_dir())
        return state

    def _forward(self, j: int, copies: int = 1) -> torch.Tensor:
        """The model's own forward and scoring on batch ``j`` (``[copies, requests of j]``)."""
        batch, full = self.batches[j], not self.config.scored_head
        if isinstance(batch, PackedBatch):
            out = packed_loglikelihoods(self.model, batch, pad_id=self.pad_id, full_logits=full, copies=copies)
            return out.view(copies, -1)
        return batch_loglikelihoods(self.model, [self.requests[k] for k in batch], max_length=self.max_length,
                                    pad_id=self.pad_id, full_logits=full).view(1, -1)

    @torch.inference_mode()
    def sweep(self, sets: Iterable[Iterable[int]], batches: Sequence[int] | None = None, *,
              label: str = "") -> dict[frozenset[int], torch.Tensor]:
        """Log-likelihoods of the models without each of ``sets``, on ``batches`` (None: all), in
        sweeps of at most ``stream_plan.models_per_sweep`` models; not memoised.

        Returns:
            removed set -> float64 ``[num_requests]`` (nats; 0 for requests outside ``batches``), on CPU.
        """
        sets = list(dict.fromkeys(frozenset(s) for s in sets))
        per = self.stream_plan.models_per_sweep
        out: dict[frozenset[int], torch.Tensor] = {}
        for start in range(0, len(sets), per):
            out.update(self._one_sweep(sets[start:start + per], batches, label))
        return out

    def _one_sweep(self, sets: list[frozenset[int]], batches: Sequence[int] | None, label: str):
        todo = my_share(list(range(len(self.batches))) if batches is None else list(batches))
        shapes = self.layout.shapes
        tape = Tape()
        streamer = BlockStreamer(self.model, self.weights, self.device, self.dtype, on_load=self.on_load)
        lls = {s: torch.zeros(len(self.requests), dtype=torch.float64) for s in sets}

        def ran(j: int) -> None:
            self.stats.block_tokens += shapes[j].rows * shapes[j].width
            self.stats.attention_pairs += shapes[j].attention_pairs

        def progress(done: int, total: int) -> None:
            if self.on_progress is not None:
                self.on_progress(label or f"{len(sets)} models, streamed", done, total)

        try:
            with fused_kernels(self.fusion), standing_in(self.model, tape):
                for j in todo:
                    tape.record(j, functools.partial(self._forward, j))
                finals = run_layer_major(streamer, tape, sets, todo, num_blocks=self.num_blocks, keep=self._keep,
                                         on_run=ran, on_block=progress)
                tape.forget()
                for j in todo:
                    index = list(requests_in(self.batches[j]))
                    width = shapes[j].rows * shapes[j].width
                    packed_copies = max(1, self.head_tokens // width) if self.packed else 1
                    for c in range(0, len(sets), packed_copies):
                        group = sets[c:c + packed_copies]
                        state = torch.cat([finals[s][j].to(self.device) for s in group])
                        scores = tape.replay(j, state, functools.partial(self._forward, j, len(group)))
                        for s, row in zip(group, scores):
                            lls[s][index] = row
                    self.stats.count([shapes[j]] * len(sets), blocks_run=0)
        finally:
            streamer.close()
        self.sweeps += 1
        self.block_loads += streamer.loads
        self.peak_block_bytes = max(self.peak_block_bytes, streamer.peak_bytes)
        self.fetch_seconds += streamer.fetch_seconds
        self.wait_seconds += streamer.wait_seconds
        summed = sum_across(torch.stack([lls[s] for s in sets]), self.device)
        return dict(zip(sets, summed))

    def run(self, removed: Iterable[int] = (), *, label: str = "", hook=None, caches=(), only=None,
            reduce: bool = True) -> torch.Tensor:
        """One streamed pass over the requests with ``removed`` taken out (``only``: those batches);
        not memoised. ``hook`` and ``caches`` (block-input caching) do not apply here."""
        if hook is not None or caches:
            raise NotImplementedError("block-input hooks are not supported by the streamed engine")   # a layershear bug
        removed = frozenset(removed)
        return self.sweep([removed], only, label=label)[removed]

    def loglikelihood(self, removed: Iterable[int] = ()) -> torch.Tensor:
        key = frozenset(removed)
        if key not in self._exact:
            self._store(key, self.sweep([key], label=f"without {sorted(key)}" if key else "full model")[key])
        return self._exact[key]

    def children(self, parent: Iterable[int], blocks: Iterable[int], *, rank: RankFn) -> dict[int, torch.Tensor]:
        """As :meth:`LoglikelihoodEngine.children`: the current model and all missing candidates in one sweep."""
        parent, blocks = frozenset(parent), list(blocks)
        missing = [parent | {b} for b in blocks if parent | {b} not in self._exact]
        if missing:
            todo = missing + ([parent] if parent not in self._exact else [])      # the parent's states are computed anyway
            for removed, row in self.sweep(todo, label=f"children of {sorted(parent)}, streamed").items():
                self._store(removed, row)
        return {b: self._exact[parent | {b}] for b in blocks}

    def run_for(self, removed: Iterable[int]) -> Run:
        """A plain run of the model without ``removed``: nothing is cached across calls (the sweep
        shares the states within one)."""
        return Run(frozenset(removed))

    def _slice_scores(self, alive, runs, sl, batch_ids):
        """All sets ``alive`` on slice ``sl`` in streamed sweeps (:meth:`LoglikelihoodEngine.race_sets`)."""
        return self.sweep(alive, batch_ids, label=f"{len(alive)} models (slice {sl + 1})")
