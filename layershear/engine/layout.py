"""How the requests of one engine are laid out in forward passes, built once and reused by every candidate.

``fast`` lays requests out in packed prefix-tree rows (:mod:`layershear.engine.packing`), with the
row width of :data:`layershear.engine.config.ROW_TOKENS` that has the fewest counted FLOPs;
``reference`` in lm-eval's length-sorted, right-padded batches. With racing every slice of the
calibration set is laid out on its own, so that one slice can be run at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from layershear.engine.config import ROW_TOKENS, EngineConfig
from layershear.engine.packing import PackedBatch, pack_requests
from layershear.engine.requests import EncodedRequest, length_sorted_batches
from layershear.engine.work import BatchShape, FlopModel, batch_shape

Batch = list[int] | PackedBatch     # request indices (lm-eval rows) or a packed batch


@dataclass(frozen=True)
class Layout:
    """The forward passes over a set of requests: ``batches[j]`` with shape ``shapes[j]``;
    ``slice_batches[s]`` lists the batches of racing slice s; ``row_tokens`` is the packed row width
    in use (None: lm-eval rows)."""

    batches: tuple[Batch, ...]
    shapes: tuple[BatchShape, ...]
    slice_batches: tuple[tuple[int, ...], ...]
    row_tokens: int | None = None


def requests_in(batch: Batch) -> list[int]:
    """Indices of the requests a batch scores."""
    return list(batch.requests) if isinstance(batch, PackedBatch) else list(batch)


def _shapes(batches: Sequence[Batch], requests: Sequence[EncodedRequest], max_length: int,
            config: EngineConfig) -> tuple[BatchShape, ...]:
    return tuple(batch_shape(b if isinstance(b, PackedBatch) else [requests[k] for k in b], max_length, config)
                 for b in batches)


def _sliced(requests: Sequence[EncodedRequest], slices: Sequence[int],
            layout: Callable[[list[EncodedRequest]], list[Batch]]) -> list[Batch]:
    """``layout(requests)`` applied to each slice on its own, request indices mapped back."""
    out: list[Batch] = []
    for sl in sorted(set(slices)):
        index = [k for k in range(len(requests)) if slices[k] == sl]
        for batch in layout([requests[k] for k in index]):
            if isinstance(batch, PackedBatch):
                out.append(dataclasses.replace(batch, requests=tuple(index[k] for k in batch.requests)))
            else:
                out.append([index[k] for k in batch])
    return out


def build_layout(requests: Sequence[EncodedRequest], *, packed: bool, config: EngineConfig, batch_size: int,
                 max_length: int, flops: FlopModel, num_blocks: int, slices: Sequence[int]) -> Layout:
    """The layout of ``requests``: packed rows (``packed``; with ``config.row_tokens`` None the width
    with the fewest FLOPs per pass, counted by ``flops`` over ``num_blocks`` blocks) or lm-eval's
    rows, every slice of ``slices`` (one per request) on its own."""
    if packed:
        longest = max(min(r.num_tokens, max_length) for r in requests)
        widths = [config.row_tokens] if config.row_tokens is not None else list(ROW_TOKENS)
        best = None
        for width in widths if config.pack else [0]:
            batches = _sliced(requests, slices, lambda reqs, width=width: pack_requests(
                reqs, max_length=max_length, share=config.share_context, pack=config.pack, row_tokens=width,
                batch_tokens=batch_size * max(longest, width)))
            shapes = _shapes(batches, requests, max_length, config)
            cost = flops.pass_flops(shapes, num_blocks)
            if best is None or cost < best[0]:
                best = (cost, width, batches, shapes)
        _, row_tokens, batches, shapes = best
    else:
        row_tokens = None
        batches = _sliced(requests, slices, lambda reqs: length_sorted_batches(reqs, batch_size))
        shapes = _shapes(batches, requests, max_length, config)
    per_slice: list[list[int]] = [[] for _ in range(max(slices) + 1)]
    for j, batch in enumerate(batches):
        per_slice[slices[requests_in(batch)[0]]].append(j)
    return Layout(tuple(batches), shapes, tuple(tuple(s) for s in per_slice), row_tokens)
