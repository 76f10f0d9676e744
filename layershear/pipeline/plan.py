"""The ``plan`` job: what a prune will cost before it starts (memory, forward work, an estimated time).

:func:`plan_job` loads the model and draws the calibration set as ``prune`` would (with the same
placement: one replica, split over GPUs, or streamed blocks), builds the Scorer's layout and cache
or stream plan, counts the block-tokens the search will compute (padded tokens x decoder blocks
run) and times a short probe: a forward pass over the first ``probe_batches`` calibration batches
(streamed: one sweep over them, which also times fetching each block's weights). The estimate
divides the counted work by the probe's measured rate; it is an estimate, not a measurement of the
job (the fast engine's step reuse and stacking only lower it). For ``devices`` > 1 it is the same
job on that many devices like this one: replicas divide the batches (an ideal split of the work);
a model split over G GPUs runs as a pipeline whose micro-batches are the calibration batches (each
GPU holds 1/G of the blocks; a pass of B batches takes B + G - 1 stage times, a stage being 1/G of
a batch's time); streamed processes divide the batches but each fetches every block.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from layershear.inputs import DataSource
from layershear.pipeline.run import EventFn, draw_calibration, place_for_job

#: host-to-device copy rate assumed for a streamed plan planned from an in-memory probe (PCIe 4 x16,
#: about 25 GB/s): only used when the probe itself did not stream
HOST_TO_DEVICE_BYTES_S = 25e9


@dataclass(frozen=True)
class JobPlan:
    """The plan of one prune job.

    Bytes are bytes; ``*_block_tokens`` count padded tokens x decoder blocks run over the search
    in the fast engine's batch layout (``reference``: a full forward of every candidate, lm-eval's
    computation, which pads its own layout differently; ``fast``: candidates
    run from their cached block input, without step reuse or stacking, an upper bound on the fast
    engine's; ``streamed``: the streamed engine's, exact, and its block loads). ``probe_*``: the
    measured probe; ``estimated_seconds_*`` = work / probe rate on one device. ``placement``: the
    one used here and why; ``estimates``: seconds of the job on ``devices`` devices like this one,
    for each placement whose weights fit there (``replica``: one per device, each on 1/devices of
    the batches; ``split``: one model over the devices as a pipeline of the batches; ``streamed``:
    one per device, each fetching every block); ``placement_on_devices``: ``replica`` where it
    fits, else the faster of the others (the one named with ``placement`` other than ``auto``),
    ``estimated_seconds`` its time.
    Free memory is measured after loading the model (its weights, or its embeddings and head
    when streamed, are resident).
    """

    source: str
    device: str
    dtype: str
    num_blocks: int
    num_remove: int
    search: str
    width: int
    models: int
    weights_bytes: int
    block_weights_bytes: int
    free_device_bytes: int
    free_host_bytes: int
    cache: str
    cache_bytes: int
    calibration_docs: int
    requests: int
    batches: int
    padded_tokens_per_pass: int
    reference_block_tokens: int
    fast_block_tokens: int
    probe_batches: int
    probe_seconds: float
    probe_block_tokens: int
    estimated_seconds_reference: float
    estimated_seconds_fast: float
    placement: str = "replica"
    placement_reason: str = ""
    devices: int = 1
    placement_on_devices: str = "replica"
    streamed_block_tokens: int = 0
    streamed_block_loads: int = 0
    probe_fetch_seconds_per_block: float | None = None
    estimated_seconds: float = 0.0
    estimates: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_block_tokens(num_blocks: int, num_remove: int, width: int, padded_tokens: int) -> tuple[int, int]:
    """(reference, fast) block-tokens of a greedy (``width`` 1) or beam search.

    At depth d a parent has n = N - d blocks. Reference: each of its n candidates is a full forward of
    n - 1 blocks. Fast: one caching pass of at most n blocks (none at depth 0: the full model's pass
    caches), then candidate j (0-based among the kept blocks)
    runs the n - 1 - j blocks after it (the last one bypasses one block). Summed over the k depths,
    ``width`` parents each, times the padded tokens of one pass; the full model's pass is counted once.
    """
    reference = fast = num_blocks * padded_tokens            # the full model
    for depth in range(num_remove):
        n = num_blocks - depth
        parents = 1 if depth == 0 else width
        reference += parents * n * (n - 1) * padded_tokens
        caching = n if depth else 0                          # the full model's pass caches depth 0's inputs
        fast += parents * (caching + n * (n - 1) // 2 + 1) * padded_tokens
    return reference, fast


def _streamed_sweeps(num_blocks: int, num_remove: int, width: int,
                     models_per_sweep: int | None) -> list[tuple[int, int]]:
    """(blocks run, blocks loaded) of every sweep of the streamed engine over a greedy or beam search
    (a sweep repeated for each of a depth's parents), in order; see :func:`streamed_block_tokens`."""
    sweeps = [(num_blocks, num_blocks)]                     # the full model
    for depth in range(num_remove):
        n = num_blocks - depth
        per = models_per_sweep or n
        for first in range(0, n, per):
            group = range(first, min(first + per, n))
            sweep = (group[-1] + sum(n - 1 - j for j in group), n - 1 if len(group) == 1 else n)
            sweeps += [sweep] * (1 if depth == 0 else width)
    return sweeps


def streamed_block_tokens(num_blocks: int, num_remove: int, width: int, padded_tokens: int,
                          models_per_sweep: int | None = None) -> tuple[int, int]:
    """(block-tokens, block loads) of a greedy or beam search in the streamed engine
    (:class:`layershear.engine.streamed.StreamedEngine`), exactly.

    The full model is one sweep of N blocks. The n candidates of a parent with n blocks (already
    scored) go in sweeps of ``models_per_sweep`` consecutive candidates (None: all in one): in a
    sweep, candidate j (0-based among the kept blocks) runs the n - 1 - j blocks after it and shares
    the parent's states up to j, which run once up to the sweep's last candidate; a sweep loads
    every block (n - 1 for a sweep of one candidate, which skips its own).
    """
    sweeps = _streamed_sweeps(num_blocks, num_remove, width, models_per_sweep)
    return sum(run for run, _ in sweeps) * padded_tokens, sum(loads for _, loads in sweeps)


def _streamed_seconds(num_blocks: int, num_remove: int, width: int, padded: int, rate: float, fetch: float,
                      devices: int, models_per_sweep: int | None = None) -> float:
    """Sum over the sweeps of max(compute on 1/devices of the batches, fetching its blocks): prefetching
    overlaps the two."""
    return sum(max(run * padded / devices / rate, loads * fetch)
               for run, loads in _streamed_sweeps(num_blocks, num_remove, width, models_per_sweep))


def split_seconds(seconds: float, devices: int, batches: int) -> float:
    """Time of work that takes ``seconds`` on one device, on a model split over ``devices`` GPUs in
    equal block ranges, with ``batches`` calibration batches per pass in flight
    (:class:`layershear.engine.forward.InFlight`): a pipeline of ``batches + devices - 1`` stages
    of ``1 / devices`` of a batch each (transfers between GPUs and uneven ranges not counted)."""
    return seconds / devices * (batches + devices - 1) / max(1, batches)


def _fitting(chosen, devices: int) -> set[str]:
    """The placements whose weights fit on ``devices`` devices like the one ``chosen`` measured."""
    from layershear.model.placement import WEIGHT_SHARE

    if chosen is None:                      # a model loaded in memory: it fits
        return {"replica"}
    free = chosen.free_bytes[0]
    fits = {"streamed"}
    if chosen.weight_bytes <= WEIGHT_SHARE * free:
        fits.add("replica")
    if devices > 1 and chosen.weight_bytes <= WEIGHT_SHARE * free * devices:
        fits.add("split")
    return fits


def plan_job(model, *, calib, ratio: float | None = None, num_remove: int | None = None, search: str = "greedy",
             beam_width: int = 1, batch_size: int = 16, max_length: int | None = None, add_bos: bool = False,
             dtype: str = "auto", device: str = "auto", revision: str | None = None, trust_remote_code: bool = False,
             data: DataSource | None = None, probe_batches: int = 2, placement: str = "auto", devices: int = 1,
             on_event: EventFn | None = None) -> JobPlan:
    """Plan a prune of ``model`` (arguments as :func:`layershear.pipeline.prune.prune_model`).

    ``search`` astar and evolve are planned as greedy: their cost is greedy's plus what
    ``--search-budget`` allows. ``probe_batches``: calibration batches timed (at least 1).
    ``devices``: plan the job for that many devices like this one (GPUs, or CPU processes).

    Raises:
        LayershearError: bad removal count, search or device count; the errors of loading the model
            and drawing the calibration set.
    """
    import torch

    from layershear.engine.prefix_cache import free_memory
    from layershear.errors import LayershearError
    from layershear.model.arch import decoder_blocks
    from layershear.pipeline.prune import check_settings
    from layershear.scoring.scorer import Scorer
    from layershear.search.beam import beam_plan
    from layershear.search.count import check_request, num_to_remove

    emit = on_event or (lambda _e: None)
    check_request(ratio, num_remove)
    check_settings("accuracy", search, beam_width, None, None, False)
    calibration = draw_calibration(calib, data, emit)
    if devices < 1:
        raise LayershearError(f"--gpus {devices}: plan for at least 1 device")
    hf_model, tokenizer, source, streamed, chosen = place_for_job(
        model, None, emit, placement=placement, dtype=dtype, device=device, revision=revision,
        trust_remote_code=trust_remote_code)
    blocks = decoder_blocks(hf_model)
    k = num_to_remove(len(blocks), ratio=ratio, num=num_remove)
    scorer = Scorer(hf_model, tokenizer, calibration.items, batch_size=batch_size, max_length=max_length,
                    add_bos=add_bos, weights=streamed)
    engine = scorer.engine
    padded = sum(s.rows * s.width for s in engine.batch_shapes)
    width = beam_width if search == "beam" else 1
    reference, fast = search_block_tokens(len(blocks), k, width, padded)
    per = engine.stream_plan.models_per_sweep if streamed is not None else None
    swept, loads = streamed_block_tokens(len(blocks), k, width, padded, per)
    probe = list(range(min(max(1, probe_batches), len(engine.batches))))
    before = engine.stats.block_tokens
    started = time.perf_counter()
    with torch.inference_mode():
        engine.run((), label="probe", only=probe)
    seconds = time.perf_counter() - started
    probe_tokens = engine.stats.block_tokens - before
    fetch = engine.fetch_seconds / max(1, engine.block_loads) if streamed is not None else None
    computing = seconds - (engine.wait_seconds if streamed is not None else 0.0)
    rate = probe_tokens / computing if computing > 0 else float("inf")
    param = next(hf_model.parameters())
    free_device, free_host = free_memory(param.device)
    block_bytes = sum(p.numel() for p in blocks[0].parameters()) * param.element_size()
    weights = sum(p.numel() * p.element_size() for p in hf_model.parameters())      # streamed blocks: meta, counted
    kind = chosen.kind if chosen is not None else "replica"
    fits = _fitting(chosen, devices) if placement == "auto" else {placement}
    batches = len(engine.batches)
    estimates = {"replica": fast / rate / devices, "split": split_seconds(fast / rate, devices, batches),
                 "streamed": _streamed_seconds(len(blocks), k, width, padded, rate,
                                               fetch if fetch is not None else block_bytes / HOST_TO_DEVICE_BYTES_S,
                                               devices, per)}
    estimates = {name: round(s, 3) for name, s in estimates.items() if name in fits}
    # a replica per device when it fits (its count is an upper bound and it fetches nothing), else the faster
    on_devices = "replica" if "replica" in estimates else min(estimates, key=estimates.get)
    plan = engine.cache_plan
    cache_bytes = plan.planned_bytes if plan is not None else 0
    return JobPlan(
        source=source, device=str(param.device), dtype=str(param.dtype).removeprefix("torch."),
        num_blocks=len(blocks), num_remove=k, search=search, width=width,
        models=beam_plan(len(blocks), k, width).models, weights_bytes=weights,
        block_weights_bytes=block_bytes,
        free_device_bytes=free_device, free_host_bytes=free_host,
        cache=plan.describe() if plan is not None else (engine.stream_plan.describe() if streamed is not None else "none"),
        cache_bytes=cache_bytes,
        calibration_docs=len(calibration.items), requests=len(engine.requests), batches=batches,
        padded_tokens_per_pass=padded, reference_block_tokens=reference, fast_block_tokens=fast,
        probe_batches=len(probe), probe_seconds=round(seconds, 4), probe_block_tokens=probe_tokens,
        estimated_seconds_reference=round(reference / rate, 3), estimated_seconds_fast=round(fast / rate, 3),
        placement=kind, placement_reason=chosen.reason if chosen is not None else "a model loaded in memory",
        devices=devices, placement_on_devices=on_devices, streamed_block_tokens=swept, streamed_block_loads=loads,
        probe_fetch_seconds_per_block=round(fetch, 6) if fetch is not None else None,
        estimated_seconds=estimates[on_devices], estimates=estimates)


__all__ = ["JobPlan", "plan_job", "search_block_tokens", "streamed_block_tokens"]
