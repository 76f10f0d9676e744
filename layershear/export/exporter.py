"""Write a pruned checkpoint by streaming tensors from the source shards; the model is never built."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from layershear.errors import ExportError
from layershear.export.atomic import atomic_folder, check_target
from layershear.model.arch import block_layout, layer_count
from layershear.model.checkpoint import INDEX as _INDEX
from layershear.model.checkpoint import SINGLE as _SINGLE
from layershear.model.checkpoint import check_checkpoint, check_complete
from layershear.model.layer_config import kept_blocks, prune_config
from layershear.model.loading import resolve_checkpoint

LOG = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".npz")
_MAX_COPY_BYTES = 512 * 2**20
_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
             "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}
_FLOAT_CODES = {"F64", "F32", "F16", "BF16"}


@dataclass(frozen=True)
class _Entry:
    """One tensor to write: where it comes from, its new key and its size in the output."""

    source_file: str
    source_key: str
    key: str
    nbytes: int


def parse_size(size: int | str) -> int:
    """Bytes in ``size``: an int, or ``5GB``, ``500MB``, ``2GiB`` as ``save_pretrained(max_shard_size=...)``
    reads it (:func:`transformers.utils.hub.convert_file_size_to_int`).

    Raises:
        ExportError: not a size (a bool, a decimal such as ``1.5GB``), or not positive.
    """
    from transformers.utils.hub import convert_file_size_to_int

    try:
        value = None if isinstance(size, bool) else convert_file_size_to_int(size)
    except (ValueError, TypeError, AttributeError):
        value = None
    if not isinstance(value, int) or value <= 0:
        shown = repr(size) if size is None or isinstance(size, (int, float, str, bytes)) else f"of type {type(size).__name__}"
        raise ExportError(f"Bad size {shown}; write a positive size such as 5GB, 500MB or 2GiB (a whole number and a unit)")
    return value


#: tensor name -> (shape, its first and last row): what :meth:`Exporter.check_weights` compares.
Fingerprint = dict[str, tuple[tuple[int, ...], torch.Tensor]]


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    flat = tensor.reshape(tensor.shape[0], -1) if tensor.ndim > 1 else tensor.reshape(1, -1)
    return torch.stack([flat[0], flat[-1]])


def fingerprint(model: torch.nn.Module) -> Fingerprint:
    """The shape and the first and last row of every tensor of ``model``'s state dict (CPU copies),
    so that an export streamed from the model's source checkpoint can be checked to hold the weights
    the model was scored with (:meth:`Exporter.check_weights`). Names without the base model prefix
    (``h.0.attn...`` for ``transformer.h.0.attn...``) are kept too, as some checkpoints use them."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    out: Fingerprint = {}
    for name, tensor in model.state_dict().items():
        entry = (tuple(tensor.shape), _rows(tensor.detach()).cpu() if tensor.numel() else tensor.detach().cpu())
        out[name] = entry
        if prefix and name.startswith(prefix + "."):
            out.setdefault(name[len(prefix) + 1:], entry)
    return out


class Exporter:
    """Export a checkpoint with some decoder blocks removed, as a folder ``from_pretrained`` loads.

    Args:
        source: Local Hugging Face model folder or Hub id (see ``model_io.resolve_checkpoint``).
        revision: Hub revision of ``source``.
        max_shard_bytes: Largest output shard; a single tensor larger than this gets a shard of its own.
        dtype: Cast floating-point tensors to this dtype (and record it in config.json); ``None`` keeps
            the source dtype.
        trust_remote_code: allow a checkpoint whose config has ``auto_map`` (its code runs when the
            export is checked to load, :func:`layershear.model.checkpoint.check_complete`).

    Raises:
        UnsupportedModelError: Unknown architecture or unreadable source.
        CheckpointError: pickle-only or no weights, a truncated shard, a malformed or incomplete index
            (:func:`layershear.model.checkpoint.check_checkpoint`).

    Example:
        >>> Exporter("Qwen/Qwen2.5-0.5B").export({3, 7}, "out/qwen-minus2", card=card_text)
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        revision: str | None = None,
        max_shard_bytes: int = 5 * 2**30,
        dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if max_shard_bytes <= 0:
            raise ExportError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        self.source = resolve_checkpoint(os.fspath(source), revision=revision)
        files = check_checkpoint(self.source, trust_remote_code=trust_remote_code, tokenizer=False)
        self.config: dict[str, Any] = files.config
        self.layout = block_layout(self.config)
        self.num_blocks = layer_count(self.config)
        self.max_shard_bytes = max_shard_bytes
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self._weight_map = files.weight_map

    def check_weights(self, expected: Fingerprint) -> None:
        """Check that every tensor of the source checkpoint has the shape, first and last row of
        ``expected`` (:func:`fingerprint` of the model that was scored), after casting to its dtype.

        Raises:
            ExportError: a tensor the model does not have, another shape, other values: the
                checkpoint is not the model that was scored (e.g. it was modified in memory).
        """
        fix = ("save the model with model.save_pretrained(DIR) and export DIR, or pass the model by its "
               "Hub id or folder")
        for file, keys in self._keys_by_file().items():
            with safe_open(self.source / file, framework="pt") as f:
                for key in keys:
                    if key not in expected:
                        raise ExportError(f"{self.source} holds tensor {key}, which the scored model does not have; {fix}")
                    shape, rows = expected[key]
                    part = f.get_slice(key)
                    if tuple(part.get_shape()) != shape:
                        raise ExportError(f"tensor {key} is {list(part.get_shape())} in {self.source} but {list(shape)} "
                                          f"in the scored model; {fix}")
                    tensor = f.get_tensor(key) if len(shape) < 2 or not shape[0] else torch.cat([part[:1], part[-1:]])
                    stored = _rows(tensor).to(rows.dtype) if tensor.numel() else tensor
                    if not torch.equal(stored, rows):
                        raise ExportError(f"tensor {key} of {self.source} differs from the scored model's; {fix}")

    def _keys_by_file(self) -> dict[str, list[str]]:
        by_file: dict[str, list[str]] = {}
        for key, file in self._weight_map.items():
            by_file.setdefault(file, []).append(key)
        return by_file

    def _block_prefix(self) -> str:
        full = self.layout.tensor_prefix
        short = full.split(".", 1)[1] if "." in full[:-1] else full  # e.g. "h." in the original gpt2 checkpoint
        for prefix in (full, short):
            if any(k.startswith(prefix) for k in self._weight_map):
                return prefix
        raise ExportError(f"no tensor key starts with {full!r} in {self.source}; is config.json the right model?")

    def _plan(self, keep: list[int]) -> list[_Entry]:
        """Validate every source key and list the tensors to write, renamed, before anything is written."""
        pattern = re.compile(re.escape(self._block_prefix()) + r"(\d+)\.(.+)$")
        new_idx = {old: new for new, old in enumerate(keep)}
        seen_blocks: set[int] = set()
        entries: list[_Entry] = []
        for file, file_keys in self._keys_by_file().items():
            with safe_open(self.source / file, framework="pt") as f:
                for key in file_keys:
                    match = pattern.match(key)
                    if match:
                        idx = int(match.group(1))
                        if idx >= self.num_blocks:
                            raise ExportError(f"tensor {key} names block {idx}; config.json has {self.num_blocks}")
                        seen_blocks.add(idx)
                        if idx not in new_idx:
                            continue
                        key_out = key[: match.start(1)] + f"{new_idx[idx]}." + match.group(2)
                    else:
                        key_out = key
                    entries.append(_Entry(file, key, key_out, self._out_nbytes(f.get_slice(key), key)))
        missing = sorted(set(range(self.num_blocks)) - seen_blocks)
        if missing:
            raise ExportError(f"the checkpoint has no tensors for blocks {missing} of {self.num_blocks}")
        return entries

    def _out_nbytes(self, tensor_slice: Any, key: str) -> int:
        code = str(tensor_slice.get_dtype())
        if code not in _ITEMSIZE:
            raise ExportError(f"tensor {key} has dtype {code}, which layershear cannot size")
        numel = 1
        for dim in tensor_slice.get_shape():
            numel *= int(dim)
        itemsize = _ITEMSIZE[code]
        if self.dtype is not None and code in _FLOAT_CODES:
            itemsize = torch.empty((), dtype=self.dtype).element_size()
        return numel * itemsize

    def _shards(self, entries: list[_Entry]) -> list[list[_Entry]]:
        shards: list[list[_Entry]] = [[]]
        size = 0
        for entry in entries:
            if shards[-1] and size + entry.nbytes > self.max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(entry)
            size += entry.nbytes
        return shards

    def _write_weights(self, entries: list[_Entry], folder: Path) -> None:
        shards = self._shards(entries)
        names = [_SINGLE] if len(shards) == 1 else [
            f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
        ]
        handles: dict[str, Any] = {}
        try:
            for name, shard in zip(names, shards):
                tensors: dict[str, torch.Tensor] = {}
                for entry in shard:
                    if entry.source_file not in handles:
                        handles[entry.source_file] = safe_open(self.source / entry.source_file, framework="pt")
                    tensor = handles[entry.source_file].get_tensor(entry.source_key)
                    if self.dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(self.dtype)
                    tensors[entry.key] = tensor.contiguous()
                save_file(tensors, folder / name, metadata={"format": "pt"})
                LOG.debug("wrote %s (%d tensors)", name, len(tensors))
        finally:
            handles.clear()
        if len(shards) > 1:
            index = {
                "metadata": {"total_size": sum(e.nbytes for e in entries)},
                "weight_map": {e.key: name for name, shard in zip(names, shards) for e in shard},
            }
            (folder / _INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def _copy_small_files(self, folder: Path, skip: set[str]) -> None:
        """Tokenizer, generation_config.json, chat_template.jinja, licence, ...: copied unchanged."""
        for path in sorted(self.source.iterdir()):
            name = path.name
            if name in skip or name.startswith(".") or not path.is_file() or name.endswith(_WEIGHT_SUFFIXES):
                continue
            if name.endswith(".index.json"):
                continue
            if path.stat().st_size > _MAX_COPY_BYTES:
                LOG.warning("not copying %s: larger than %d bytes", name, _MAX_COPY_BYTES)
                continue
            shutil.copyfile(path, folder / name)

    def _write_config(self, keep: list[int], folder: Path) -> None:
        config = prune_config(self.config, keep=keep)
        if self.dtype is not None:
            name = str(self.dtype).removeprefix("torch.")
            config["dtype"] = name
            if "torch_dtype" in config:
                config["torch_dtype"] = name
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def export(
        self,
        removed: Iterable[int],
        out_dir: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        card: str | None = None,
        extra_files: Mapping[str, str] | None = None,
    ) -> Path:
        """Write the checkpoint without the blocks in ``removed`` to ``out_dir``, atomically.

        Blocks are renumbered contiguously (``model.layers.5.`` becomes ``model.layers.4.`` once one
        earlier block is gone); everything is written into a temporary folder beside ``out_dir`` and
        renamed into place only when complete.

        Args:
            removed: Original indices of the blocks to remove.
            out_dir: Target folder; must not exist or be empty unless ``overwrite``.
            overwrite: Replace an existing ``out_dir`` (only after the new folder is complete).
            card: Model card text, written as ``README.md``.
            extra_files: File name -> text, written as given (e.g. ``layershear.json``).

        Returns:
            ``out_dir`` as a ``Path``.

        Raises:
            ExportError: Bad indices, an existing target without ``overwrite`` (or one that is not a
                model folder, or is, holds or lies inside the source), another run writing it, too
                little disk space, or a failed write (no temporary folder is left behind, a previous
                output stays intact).
            CheckpointError: the tensors to write are not exactly those the pruned architecture
                needs (:func:`layershear.model.checkpoint.check_complete`).
        """
        out = Path(out_dir)
        keep = kept_blocks(removed, self.num_blocks)
        check_target(out, overwrite, sources=[self.source])
        entries = self._plan(keep)
        prune_config(self.config, keep=keep)  # fail on an inconsistent config before writing anything
        files = dict(extra_files or {})
        if card is not None:
            files["README.md"] = card
        bad = [name for name in files if Path(name).name != name]
        if bad:
            raise ExportError(f"extra file name {bad[0]!r} must be a plain file name")
        small = sum(p.stat().st_size for p in self.source.iterdir() if p.is_file() and not p.name.endswith(_WEIGHT_SUFFIXES))
        try:
            with atomic_folder(out, nbytes=sum(e.nbytes for e in entries) + small) as tmp:
                self._write_weights(entries, tmp)
                self._write_config(keep, tmp)
                self._copy_small_files(tmp, {"config.json", *files})
                for name, text in files.items():
                    (tmp / name).write_text(text, encoding="utf-8")
                check_complete(tmp, out, trust_remote_code=self.trust_remote_code)   # before it replaces anything
        except OSError as e:
            raise ExportError(f"writing {out} failed: {e.strerror or e}; nothing was changed at {out}") from e
        LOG.info("exported %d of %d blocks to %s", len(keep), self.num_blocks, out)
        return out
