"""Remove decoder blocks from a loaded model in place, for as long as a ``with`` block lasts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from layershear.errors import LayershearError
from layershear.model.arch import block_layout, resolve_path
from layershear.model.layer_config import kept_blocks, prune_config

LOG = logging.getLogger(__name__)
_MISSING = object()


def _configs(model: torch.nn.Module) -> list[PretrainedConfig]:
    seen: dict[int, PretrainedConfig] = {}
    for module in model.modules():
        config = module.__dict__.get("config")
        if isinstance(config, PretrainedConfig):
            seen.setdefault(id(config), config)
    return list(seen.values())


def _config_changes(config: PretrainedConfig, keep: list[int]) -> dict[str, Any]:
    """Config attributes to set so the forward sees only the kept blocks (layer count, layer_types, ...)."""
    before = config.to_dict()
    after = prune_config(before, keep=keep, validate=False)
    return {k: v for k, v in after.items() if k not in before or before[k] != v}


@contextmanager
def remove_blocks(model: PreTrainedModel, removed: Iterable[int]) -> Iterator[PreTrainedModel]:
    """Temporarily remove decoder blocks from ``model`` without copying weights.

    Inside the ``with`` block the model's forward equals that of a checkpoint exported with the same
    blocks removed: the block list holds only the kept modules, the config's layer count and per-layer
    fields (``layer_types``, ...) are pruned, and each kept block's ``layer_idx`` is renumbered so the
    KV cache (``use_cache=True``) is indexed by the new position. Everything is restored on exit, also
    when the body raises.

    Args:
        model: A supported causal LM (see ``layershear.model.arch``); modified in place while inside.
        removed: Original indices of the blocks to remove; may be empty.

    Yields:
        The same ``model`` object.

    Raises:
        LayershearError: An index is out of range or every block would be removed.
        UnsupportedModelError: The architecture is not supported.

    Example:
        >>> with remove_blocks(model, {3, 7}) as pruned:
        ...     logits = pruned(input_ids).logits
    """
    layout = block_layout(model)
    parent_path, _, attr = layout.blocks_path.rpartition(".")
    parent = resolve_path(model, parent_path) if parent_path else model
    blocks = getattr(parent, attr)
    keep = kept_blocks(removed, len(blocks), error=LayershearError)
    saved: list[tuple[Any, str, Any]] = []
    try:
        for config in _configs(model):
            for key, value in _config_changes(config, keep).items():
                saved.append((config, key, getattr(config, key, _MISSING)))
                setattr(config, key, value)
        for new_idx, old_idx in enumerate(keep):
            for module in blocks[old_idx].modules():
                if isinstance(module.__dict__.get("layer_idx"), int):
                    saved.append((module, "layer_idx", module.layer_idx))
                    module.layer_idx = new_idx
        setattr(parent, attr, torch.nn.ModuleList([blocks[i] for i in keep]))
        yield model
    finally:
        setattr(parent, attr, blocks)
        for obj, key, value in reversed(saved):
            if value is _MISSING:
                obj.__dict__.pop(key, None)
            else:
                setattr(obj, key, value)
