"""Data parallelism over calibration batches with torch.distributed (one process per GPU).

Launch with torchrun, e.g. ``torchrun --nproc-per-node 8 -m layershear prune MODEL ...``. Every
process holds the whole model and the same batch layout; process r runs batches r, r + W, r + 2W,
... of every pass over the requests (W = world size) and the per-request log-likelihoods are summed across
processes (all-reduce), so every process sees every number and takes the same search decisions.
Block-input caches stay local: a process only caches and reads the batches it runs. Only rank 0
prints, writes files and pushes. Backend: NCCL on CUDA, gloo on CPU.

No process waits forever for a failed one: every collective has a timeout
(``LAYERSHEAR_DIST_TIMEOUT`` seconds, default 1800), and one that times out or loses a peer raises
:class:`layershear.errors.LayershearError` naming the rank; torchrun then stops the other processes
and exits non-zero.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from layershear.errors import LayershearError

T = TypeVar("T")
TIMEOUT_ENV = "LAYERSHEAR_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800


def timeout_s() -> float:
    """Seconds a collective may wait for the other processes (``LAYERSHEAR_DIST_TIMEOUT``, default 1800).

    Raises:
        LayershearError: the variable is not a positive number.
    """
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise LayershearError(f"{TIMEOUT_ENV}={text!r} is not a positive number of seconds; e.g. {TIMEOUT_ENV}=1800")
    return value


def _collective(name: str, call: Callable[[], T]) -> T:
    """Run one collective call; a timeout or a lost peer becomes a one-line LayershearError."""
    try:
        return call()
    except (RuntimeError, OSError) as e:       # DistBackendError / DistNetworkError are RuntimeErrors
        rank, size = world()
        raise LayershearError(f"rank {rank} of {size}: {name} across processes failed ({str(e).splitlines()[0][:200]}): "
                              f"another process failed or stalled for over {timeout_s():.0f} s; see its error "
                              f"(raise {TIMEOUT_ENV} for slow steps)") from e


def init_from_env() -> None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); no-op for a single process.

    On CUDA each process uses GPU ``LOCAL_RANK``.
    """
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s()))


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process prints and writes (rank 0)."""
    return world()[0] == 0


def my_share(indices: list[int]) -> list[int]:
    """The entries of ``indices`` this process runs: every W-th, starting at its rank."""
    rank, size = world()
    return indices[rank::size]


def sum_across(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Element-wise sum over processes (returns ``tensor`` itself for one process), on CPU."""
    if world()[1] == 1:
        return tensor
    work = tensor.to(device)
    _collective("summing log-likelihoods", lambda: dist.all_reduce(work, op=dist.ReduceOp.SUM))
    return work.cpu()


def min_across(values: tuple[int, ...], device: torch.device) -> tuple[int, ...]:
    """Element-wise minimum of integer ``values`` over processes (``values`` itself for one process):
    decisions that change which collective calls follow (a pass skipped, a cache plan) must agree."""
    if world()[1] == 1:
        return tuple(values)
    work = torch.tensor(values, dtype=torch.int64, device=device)
    _collective("agreeing on a plan", lambda: dist.all_reduce(work, op=dist.ReduceOp.MIN))
    return tuple(int(v) for v in work.cpu())


def from_main(value):
    """Rank 0's ``value`` on every process (``torch.distributed.broadcast_object_list``; ``value``
    itself for one process): what rank 0 alone reads from disk, e.g. a journal on a node-local drive."""
    if world()[1] == 1:
        return value
    box = [value]
    _collective("receiving rank 0's state", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]
