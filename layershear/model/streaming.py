"""Decoder-block weights that live off the device and come to it one block at a time (block streaming).

A model too large for its device keeps its embeddings, final norm and LM head resident and its
decoder blocks' parameters on PyTorch's ``meta`` device. A :class:`BlockStreamer` brings one
block's weights to the device when the layer-major engine (:mod:`layershear.engine.layer_major`)
runs that block, and prefetches the next block's while the current one computes, so at most two
blocks' weights are resident. The weights come from a :class:`WeightSource`:

- :class:`ShardWeights`: straight from the checkpoint's safetensors shards, memory-mapped
  (``safetensors.safe_open``; a tensor is read when its block is fetched);
- :class:`HostWeights`: from host memory (pinned on CUDA) that a loaded model's blocks were moved to.

Parameters are swapped with accelerate's ``set_module_tensor_to_device`` (the machinery of its
big-model offload), so a block module is the model's own, unchanged, whenever it runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import torch
from accelerate.utils import set_module_tensor_to_device

from layershear.errors import CheckpointError
from layershear.model.arch import block_layout, decoder_blocks

META = torch.device("meta")


class WeightSource(Protocol):
    """Where the weights of the decoder blocks are read from."""

    def block_tensors(self, block_idx: int) -> dict[str, torch.Tensor]:
        """Block ``block_idx``'s parameters by name inside the block (``self_attn.q_proj.weight``), on CPU."""


def block_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of one decoder block's parameters, inside the block (every block has the same ones)."""
    return [name for name, _ in decoder_blocks(model)[0].named_parameters()]


class ShardWeights:
    """Block weights read from a checkpoint folder's safetensors files, memory-mapped.

    Args:
        folder: a Hugging Face checkpoint folder (``model.safetensors`` or shards with
            ``model.safetensors.index.json``).
        tensor_prefix: key prefix of the blocks in the shards, e.g. ``model.layers.``
            (:attr:`layershear.model.arch.BlockLayout.tensor_prefix`).

    Raises:
        CheckpointError: no safetensors weights in ``folder``.
    """

    def __init__(self, folder: str | Path, tensor_prefix: str) -> None:
        from safetensors import safe_open

        self.folder = Path(folder)
        self.prefix = tensor_prefix
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            self.where = {k: self.folder / f for k, f in json.loads(index.read_text())["weight_map"].items()}
        elif (self.folder / "model.safetensors").is_file():
            with safe_open(self.folder / "model.safetensors", framework="pt") as f:
                self.where = dict.fromkeys(f.keys(), self.folder / "model.safetensors")
        else:
            raise CheckpointError(f"no safetensors weights in {self.folder}; block streaming reads "
                                  "model.safetensors or its shards")
        self._open: dict[Path, object] = {}
        self._lock = threading.Lock()

    def _handle(self, path: Path):
        from safetensors import safe_open

        with self._lock:
            if path not in self._open:
                self._open[path] = safe_open(path, framework="pt", device="cpu")
            return self._open[path]

    def tensor(self, key: str) -> torch.Tensor:
        """The tensor ``key`` of the checkpoint (read from its memory-mapped shard), on CPU.

        Raises:
            CheckpointError: the checkpoint has no tensor ``key``.
        """
        if key not in self.where:
            raise CheckpointError(f"{self.folder} has no tensor {key!r}; block streaming needs the shards' "
                                  "tensor names to match the model's parameters (re-save it with save_pretrained)")
        return self._handle(self.where[key]).get_tensor(key)

    def block_tensors(self, block_idx: int) -> dict[str, torch.Tensor]:
        start = f"{self.prefix}{block_idx}."
        return {k[len(start):]: self.tensor(k) for k in self.where if k.startswith(start)}

    def other_keys(self) -> list[str]:
        """Keys of the tensors outside the decoder blocks (embeddings, final norm, LM head)."""
        return [k for k in self.where if not (k.startswith(self.prefix) and k[len(self.prefix):].split(".")[0].isdigit())]


class HostWeights:
    """Block weights moved off a loaded model into host memory (pinned when CUDA is available, so
    copies to the GPU are asynchronous); the model's block parameters become ``meta`` tensors.

    Args:
        model: a loaded causal LM; its blocks' parameters are taken (the model is changed in place).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        pin = torch.cuda.is_available()
        self.tensors: list[dict[str, torch.Tensor]] = []
        for block in decoder_blocks(model):
            host = {}
            for name, param in list(block.named_parameters()):
                value = param.detach().to("cpu")
                host[name] = value.pin_memory() if pin else value
                set_module_tensor_to_device(block, name, META, clear_cache=False)
            self.tensors.append(host)

    def block_tensors(self, block_idx: int) -> dict[str, torch.Tensor]:
        return dict(self.tensors[block_idx])


class BlockStreamer:
    """Brings decoder blocks' weights to ``device`` one block at a time, prefetching the next block.

    :meth:`load` installs block k's parameters (``dtype``) into the model's own block module and,
    given the block that runs next, starts fetching it in a background thread (reading the shards,
    casting, and on CUDA copying from host on a side stream); :meth:`release` returns block k's
    parameters to ``meta``. ``resident_bytes`` counts the block weights on the device now, the
    installed blocks and the prefetched one; ``peak_bytes`` is its maximum. ``fetch_seconds`` sums
    the time spent fetching blocks (in the prefetch thread), ``wait_seconds`` the time :meth:`load`
    waited for a fetch to finish (what prefetching did not hide).

    Args:
        model: a causal LM whose blocks' parameters are ``meta`` tensors.
        source: where block weights are read from.
        device: where blocks run.
        dtype: parameter dtype on the device.
        on_load: called with ``block_idx`` after each block is installed (e.g. to sample memory).
    """

    def __init__(self, model: torch.nn.Module, source: WeightSource, device: torch.device, dtype: torch.dtype,
                 on_load: Callable[[int], None] | None = None) -> None:
        self.blocks = list(decoder_blocks(model))     # the block modules themselves, whatever stands in their places
        self.source, self.device, self.dtype, self.on_load = source, device, dtype, on_load
        self.resident: dict[int, int] = {}          # block -> bytes on the device (installed or prefetched)
        self.peak_bytes = 0
        self.loads = 0
        self.fetch_seconds = 0.0
        self.wait_seconds = 0.0
        self._pending: tuple[int, Future] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layershear-prefetch")
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    @property
    def resident_bytes(self) -> int:
        return sum(self.resident.values())

    def _fetch(self, block_idx: int) -> tuple[dict[str, torch.Tensor], torch.cuda.Event | None]:
        started = time.perf_counter()
        tensors = self.source.block_tensors(block_idx)
        if self._stream is None:
            out, event = {k: v.to(self.device, self.dtype) for k, v in tensors.items()}, None
        else:
            with torch.cuda.stream(self._stream):
                out = {k: v.to(self.device, self.dtype, non_blocking=True) for k, v in tensors.items()}
                event = torch.cuda.Event()
                event.record(self._stream)
            event.synchronize()          # in this thread: the copy's time counts as fetching
        self.fetch_seconds += time.perf_counter() - started
        return out, event

    def _start(self, block_idx: int) -> Future:
        nbytes = sum(p.numel() for p in self.blocks[block_idx].parameters()) * torch.finfo(self.dtype).bits // 8
        self.resident[block_idx] = nbytes
        self.peak_bytes = max(self.peak_bytes, self.resident_bytes)
        return self._pool.submit(self._fetch, block_idx)

    def load(self, block_idx: int, then: int | None = None) -> torch.nn.Module:
        """Install block ``block_idx``'s weights (the prefetched ones if they are ready or on the way)
        and start fetching block ``then``, if given.

        Returns:
            The block module, ready to run.

        Raises:
            CheckpointError: the source lacks a parameter of the block.
        """
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] != block_idx:     # a prefetch nobody needs: drop it
            pending[1].result()
            self.resident.pop(pending[0], None)
            pending = None
        future = pending[1] if pending is not None else self._start(block_idx)
        started = time.perf_counter()
        tensors, event = future.result()
        self.wait_seconds += time.perf_counter() - started
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        block = self.blocks[block_idx]
        missing = [n for n, _ in block.named_parameters() if n not in tensors]
        if missing:
            raise CheckpointError(f"the weights of block {block_idx} lack {missing[0]!r}; block streaming needs "
                                  "every parameter of every block in the checkpoint")
        for name, value in tensors.items():
            set_module_tensor_to_device(block, name, self.device, value=value, clear_cache=False)
        self.loads += 1
        if then is not None:
            self._pending = (then, self._start(then))
        if self.on_load is not None:
            self.on_load(block_idx)
        return block

    def release(self, block_idx: int) -> None:
        """Return block ``block_idx``'s parameters to ``meta`` (its device memory is freed)."""
        block = self.blocks[block_idx]
        for name, _ in list(block.named_parameters()):
            set_module_tensor_to_device(block, name, META, clear_cache=False)
        self.resident.pop(block_idx, None)

    def close(self) -> None:
        """Drop a prefetch in flight and stop the prefetch thread."""
        if self._pending is not None:
            self._pending[1].result()
            self.resident.pop(self._pending[0], None)
            self._pending = None
        self._pool.shutdown(wait=True)


def _model_keys(model, keys: list[str]) -> dict[str, str]:
    """checkpoint key -> the model's parameter name, by transformers' own renaming rules of the
    checkpoint format (e.g. GPT-NeoX's ``embed_out`` is ``lm_head``); identity where it has none."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:      # pragma: no cover - transformers without conversion mappings
        return {k: k for k in keys}
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
    return {k: rename_source_key(k, renamings, converters)[0] for k in keys}


def streamed_model(folder: str | Path, *, dtype: torch.dtype, device: torch.device):
    """A causal LM from a checkpoint folder with only the tensors outside its decoder blocks loaded
    (embeddings, final norm, LM head) on ``device``; the blocks' parameters stay ``meta``, to be
    streamed from the shards by a :class:`BlockStreamer` over the returned :class:`ShardWeights`.

    Returns:
        ``(model, source)``: the model in eval mode, and the memory-mapped block weights.

    Raises:
        CheckpointError: no safetensors weights, or a parameter outside the blocks is missing.
        UnsupportedModelError: an architecture :mod:`layershear.model.arch` does not support.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    layout = block_layout(config)
    source = ShardWeights(folder, layout.tensor_prefix)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    params = dict(model.named_parameters())
    others = source.other_keys()
    renamed = _model_keys(model, others)
    for key in others:
        if renamed[key] in params:
            set_module_tensor_to_device(model, renamed[key], device, value=source.tensor(key), dtype=dtype, clear_cache=False)
    if getattr(model.config, "tie_word_embeddings", False):
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    blocks = {id(p) for p in decoder_blocks(model).parameters()}
    left = [n for n, p in model.named_parameters() if p.device == META and id(p) not in blocks]
    if left:
        raise CheckpointError(f"{folder} lacks {left[0]!r} (outside the decoder blocks); is the checkpoint complete?")
    for name, buffer in list(model.named_buffers()):
        if buffer.device != device:
            set_module_tensor_to_device(model, name, device, clear_cache=False)
    return model.eval(), source
