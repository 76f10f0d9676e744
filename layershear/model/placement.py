"""Where a model's weights live during a job: one replica per device, split over a node's GPUs, or streamed.

- ``replica``: the whole model on one device (one GPU per process under torchrun; or the CPU).
- ``split``: contiguous ranges of decoder blocks on each GPU the process sees (accelerate's
  ``infer_auto_device_map``; hidden states move from GPU to GPU with accelerate's hooks, and each
  cached block input stays on the GPU that owns its block).
- ``streamed``: embeddings, final norm and LM head on one device; the blocks' weights come from the
  memory-mapped safetensors shards one block at a time (:mod:`layershear.model.streaming`,
  :class:`layershear.engine.streamed.StreamedEngine`).

``auto`` takes the first that fits in the measured free memory (:func:`choose_placement`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from layershear.errors import LayershearError
from layershear.model.checkpoint import CheckpointFiles

PLACEMENTS = ("auto", "replica", "split", "streamed")
#: share of a device's free memory the weights may take; the rest is for activations and caches
WEIGHT_SHARE = 0.8


@dataclass(frozen=True)
class Placement:
    """The chosen placement and the figures it was chosen from.

    ``kind``: ``replica``, ``split`` or ``streamed``; ``weight_bytes``: the model's weights in the
    job's dtype; ``free_bytes``: free memory of each device the process may use (GPUs, or host RAM
    for the CPU), measured; ``reason``: why, in words; ``device_map``: module -> GPU for ``split``.
    """

    kind: str
    weight_bytes: int
    free_bytes: tuple[int, ...]
    reason: str
    device_map: dict[str, int] | None = None

    def describe(self) -> str:
        """One line for the CLI, e.g. ``placement: streamed (weights 140.0 GiB > 80% of 1 x 79.1 GiB free)``."""
        free = " + ".join(f"{b / 2**30:.1f}" for b in self.free_bytes)
        return f"placement: {self.kind} ({self.reason}; weights {self.weight_bytes / 2**30:.2f} GiB, free {free} GiB)"


def checkpoint_weight_bytes(files: CheckpointFiles, dtype: torch.dtype) -> int:
    """Bytes of every tensor of the checked checkpoint ``files``
    (:func:`layershear.model.checkpoint.check_checkpoint`) once cast to ``dtype``, read from the
    shards' safetensors headers (no tensor is loaded)."""
    from safetensors import safe_open

    size = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else torch.iinfo(dtype).bits // 8
    total = 0
    for name in sorted(set(files.weight_map.values())):
        with safe_open(files.folder / name, framework="pt") as f:
            keys = f.keys()         # a safe_open handle is not iterable
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in keys) * size
    return total


def free_device_bytes(device: torch.device) -> tuple[int, ...]:
    """Free bytes of each GPU this process may use (``device`` is CUDA), else of host RAM, measured now.

    A process may use every GPU it sees, unless torchrun started several processes on its node
    (``LOCAL_WORLD_SIZE`` > 1): then only its own (``LOCAL_RANK``).
    """
    if device.type == "cuda":
        if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
            return (torch.cuda.mem_get_info(int(os.environ.get("LOCAL_RANK", "0")))[0],)
        return tuple(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
    import psutil  # a dependency of accelerate

    return (psutil.virtual_memory().available,)


def choose_placement(weight_bytes: int, free_bytes: Sequence[int], asked: str = "auto") -> Placement:
    """``asked``, or for ``auto`` the first of replica / split / streamed whose weights fit in
    :data:`WEIGHT_SHARE` of the free memory (one device's, all devices' together, any).

    Raises:
        LayershearError: an unknown placement, or ``split`` with fewer than two GPUs.
    """
    free = tuple(int(b) for b in free_bytes)
    if asked not in PLACEMENTS:
        raise LayershearError(f"Unknown placement {asked!r}; choose one of: {', '.join(PLACEMENTS)}")
    if asked == "split" and len(free) < 2:
        raise LayershearError("--placement split needs two or more GPUs visible to the process; use replica or streamed")
    if asked != "auto":
        return Placement(asked, weight_bytes, free, "asked for")
    if weight_bytes <= WEIGHT_SHARE * free[0]:
        return Placement("replica", weight_bytes, free, f"fits on one device ({WEIGHT_SHARE:.0%} of its free memory)")
    if len(free) > 1 and weight_bytes <= WEIGHT_SHARE * sum(free):
        return Placement("split", weight_bytes, free, f"fits on {len(free)} GPUs together, not on one")
    return Placement("streamed", weight_bytes, free, "does not fit on the devices: blocks streamed from the shards")


def split_device_map(config, dtype: torch.dtype, free_bytes: Sequence[int]) -> dict[str, int]:
    """accelerate's device map of the model of ``config`` over GPUs ``0..len(free_bytes)-1``:
    contiguous block ranges in order, no block split across GPUs, each GPU filled to
    :data:`WEIGHT_SHARE` of its free memory (:func:`accelerate.infer_auto_device_map`).

    Raises:
        LayershearError: the model does not fit on these GPUs.
    """
    from accelerate import infer_auto_device_map

    from layershear.model.arch import decoder_blocks, meta_model

    model = meta_model(config)
    block_class = type(decoder_blocks(model)[0]).__name__
    memory = {i: int(WEIGHT_SHARE * b) for i, b in enumerate(free_bytes)}
    device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=[block_class], dtype=dtype)
    off = sorted({str(d) for d in device_map.values() if not isinstance(d, int)})
    if off:
        raise LayershearError(f"the model does not fit on {len(memory)} GPUs (parts would go to {', '.join(off)}); "
                              "use --placement streamed")
    return device_map
