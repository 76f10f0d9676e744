"""Where each supported causal LM keeps its decoder blocks, and which models cannot lose blocks safely."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from layershear.errors import UnsupportedModelError

try:  # transformers 5 configs are huggingface_hub strict dataclasses
    from huggingface_hub.errors import StrictDataclassError
except ImportError:  # pragma: no cover - older huggingface_hub
    StrictDataclassError = ValueError  # type: ignore[misc,assignment]

LOG = logging.getLogger(__name__)
CONFIG_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, StrictDataclassError)
"""What transformers raises for a config it rejects."""


@dataclass(frozen=True)
class BlockLayout:
    """How one architecture stores its decoder blocks.

    Attributes:
        model_type: ``config.model_type``, e.g. ``"llama"``.
        blocks_path: Dotted attribute path from the ``*ForCausalLM`` to the ``nn.ModuleList`` of blocks.
        tensor_prefix: Safetensors key prefix before the block index, e.g. ``"model.layers."``.
        num_layers_key: Config key of the layer count, ``"num_hidden_layers"`` or ``"n_layer"``.
    """

    model_type: str
    blocks_path: str
    tensor_prefix: str
    num_layers_key: str


def _layout(model_type: str, blocks_path: str, num_layers_key: str = "num_hidden_layers") -> BlockLayout:
    return BlockLayout(model_type, blocks_path, blocks_path + ".", num_layers_key)


_TABLE: dict[str, BlockLayout] = {
    t: _layout(t, "model.layers")
    for t in ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "olmo2", "phi3")
}
_TABLE["gpt_neox"] = _layout("gpt_neox", "gpt_neox.layers")
_TABLE["gpt2"] = _layout("gpt2", "transformer.h", "n_layer")

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_TABLE)
"""Model types with a tested layout; others are accepted when a unique block list is found (untested)."""

_WARNED: set[str] = set()
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def _config_of(config_or_model: Any) -> PretrainedConfig | Mapping[str, Any]:
    if isinstance(config_or_model, torch.nn.Module):
        config = getattr(config_or_model, "config", None)
        if config is None:
            raise UnsupportedModelError(f"{type(config_or_model).__name__} has no `config`; pass a Hugging Face model")
        return config
    return config_or_model


def _get(config: PretrainedConfig | Mapping[str, Any], key: str) -> Any:
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def layer_count(config: PretrainedConfig | Mapping[str, Any]) -> int:
    """Return the number of decoder blocks a config declares.

    Raises:
        UnsupportedModelError: No known layer-count key is set.
    """
    for key in LAYER_COUNT_KEYS:
        value = _get(config, key)
        if isinstance(value, int):
            return value
    raise UnsupportedModelError(f"config has none of {', '.join(LAYER_COUNT_KEYS)}; cannot count its blocks")


def _check_no_shared_state(config: PretrainedConfig | Mapping[str, Any], name: str) -> None:
    if (_get(config, "num_kv_shared_layers") or 0) > 0:
        raise UnsupportedModelError(
            f"{name} shares its KV cache across layers (num_kv_shared_layers={_get(config, 'num_kv_shared_layers')}); "
            "removing a block would break the layers that reuse its keys and values"
        )
    modes = getattr(config, "kv_sharing_modes", None) if not isinstance(config, Mapping) else None
    if isinstance(modes, (list, tuple)) and any(m is not None for m in modes):
        raise UnsupportedModelError(f"{name} shares KV state across layers ({modes}); blocks cannot be removed")
    if _get(config, "scale_attn_by_inverse_layer_idx"):
        # GPT-2 bakes 1/(layer_idx+1) into each block's attention at init; a renumbered block changes its output.
        raise UnsupportedModelError(
            f"{name} scales attention by 1/(block index + 1) (scale_attn_by_inverse_layer_idx=True), "
            "so a block behaves differently once it moves; removing blocks is not supported"
        )


def _unsupported(name: str, reason: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"Unsupported architecture {name}: {reason}. Supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )


def _find_block_list(model: torch.nn.Module, num_layers: int) -> str | None:
    found = [
        path
        for path, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers and path
    ]
    # Nested lists (e.g. experts inside a block) are never the outermost one; keep the shallowest.
    outer = [p for p in found if not any(p.startswith(q + ".") for q in found if q != p)]
    return outer[0] if len(outer) == 1 else None


def _is_causal_lm(class_name: str) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names = {n for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for n in ((v,) if isinstance(v, str) else v)}
    return class_name.endswith("ForCausalLM") or class_name in names


def _generic_layout(model: torch.nn.Module, config: Any, model_type: str) -> BlockLayout:
    name = type(model).__name__
    if not _is_causal_lm(name):
        raise _unsupported(name, "not a causal LM (*ForCausalLM) model")
    path = _find_block_list(model, layer_count(config))
    if path is None:
        raise _unsupported(name, f"found no single nn.ModuleList of {layer_count(config)} decoder blocks")
    key = next(k for k in LAYER_COUNT_KEYS if isinstance(_get(config, k), int))
    if model_type not in _WARNED:
        _WARNED.add(model_type)
        LOG.warning("model type %r is not in the tested table; using blocks at %r", model_type, path)
    return BlockLayout(model_type, path, path + ".", key)


def meta_model(config: Any) -> torch.nn.Module:
    """The causal LM of ``config`` (a ``PretrainedConfig`` or a ``config.json`` dict) on the meta device: its
    modules and tensor names without memory.

    Raises:
        UnsupportedModelError: transformers cannot build it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        if isinstance(config, Mapping):
            config = AutoConfig.for_model(**dict(config))
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (*CONFIG_ERRORS, OSError, ImportError) as e:
        raise _unsupported(str(_get(config, "model_type")), f"transformers cannot build it ({e})") from e


def block_layout(config_or_model: Any) -> BlockLayout:
    """Find where a causal LM keeps its decoder blocks.

    Args:
        config_or_model: A ``PreTrainedModel``, a ``PretrainedConfig`` or a ``config.json`` dict.

    Returns:
        The model's ``BlockLayout``; table entries for tested model types, otherwise the single
        ``nn.ModuleList`` whose length equals the config's layer count (found on a meta-device copy
        when only a config is given).

    Raises:
        UnsupportedModelError: Unknown architecture (message names the class and lists the supported
            model types), blocks that share state (KV sharing, shared weights) or index-dependent blocks.
    """
    config = _config_of(config_or_model)
    model_type = str(_get(config, "model_type") or "")
    name = type(config_or_model).__name__ if isinstance(config_or_model, torch.nn.Module) else repr(model_type)
    _check_no_shared_state(config, name)
    layout = _TABLE.get(model_type)
    if isinstance(config_or_model, torch.nn.Module):
        if layout is None:
            layout = _generic_layout(config_or_model, config, model_type)
        _check_model(config_or_model, layout)
    elif layout is None:
        layout = _generic_layout(meta_model(config), config, model_type)
    return layout


def resolve_path(model: torch.nn.Module, path: str) -> Any:
    """The attribute at dotted ``path`` of ``model`` (e.g. ``"model.layers"``), None where one is missing."""
    obj: Any = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def _check_model(model: torch.nn.Module, layout: BlockLayout) -> None:
    blocks = resolve_path(model, layout.blocks_path)
    name = type(model).__name__
    if not isinstance(blocks, torch.nn.ModuleList):
        raise _unsupported(name, f"no nn.ModuleList at {layout.blocks_path!r}")
    owner: dict[int, int] = {}
    for idx, block in enumerate(blocks):
        for p in block.parameters():
            if owner.setdefault(id(p), idx) != idx:
                raise UnsupportedModelError(
                    f"{name} shares weights between blocks {owner[id(p)]} and {idx}; blocks cannot be removed"
                )


def decoder_blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    """Return the model's ``nn.ModuleList`` of decoder blocks (the live object, not a copy).

    Raises:
        UnsupportedModelError: As ``block_layout``.
    """
    return resolve_path(model, block_layout(model).blocks_path)
