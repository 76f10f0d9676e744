"""Rewrite a ``config.json`` dict for a model that keeps only some of its decoder blocks."""

from __future__ import annotations

import copy
import logging
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from layershear.errors import ExportError, LayershearError, UnsupportedModelError
from layershear.model.arch import CONFIG_ERRORS, LAYER_COUNT_KEYS, layer_count

LOG = logging.getLogger(__name__)

# Top-level lists that are never per-layer, even when their length happens to equal the layer count.
_NOT_PER_LAYER = frozenset(
    {
        "architectures", "eos_token_id", "bos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
        "bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_decoder_ids", "mtp_layer_types",
        "mtp_mlp_layer_types", "id2label", "label2id",
    }
)
# Lists of block indices (not per-layer values): remapped to the new indices of the kept blocks.
_INDEX_LISTS = ("mlp_only_layers", "moe_layers")


def check_keep(
    keep: Iterable[Any], num_layers: int, *, error: type[LayershearError] = ExportError
) -> list[int]:
    """Return the block indices in ``keep`` as sorted, deduplicated ints.

    Raises:
        ExportError: (or ``error``) An index is not an int in ``[0, num_layers)``, or nothing is kept.
    """
    kept, bad = set(), []
    for i in keep:
        try:
            idx = operator.index(i)
        except TypeError:
            idx = -1
        if 0 <= idx < num_layers:
            kept.add(idx)
        else:
            bad.append(i)
    if bad:
        raise error(f"block indices {bad} are out of range for a model with {num_layers} blocks (0..{num_layers - 1})")
    if not kept:
        raise error(f"cannot remove all {num_layers} blocks; keep at least one")
    return sorted(kept)


def kept_blocks(
    removed: Iterable[Any], num_layers: int, *, error: type[LayershearError] = ExportError
) -> list[int]:
    """Return the sorted original indices of the blocks that remain after removing ``removed``.

    Raises:
        ExportError: (or ``error``) An index is out of range, or every block would be removed.
    """
    removed = list(removed)
    gone = set(check_keep(removed, num_layers, error=error)) if removed else set()
    if len(gone) == num_layers:
        raise error(f"cannot remove all {num_layers} blocks; keep at least one")
    return [i for i in range(num_layers) if i not in gone]


def _config_class(model_type: str) -> Any:
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[model_type] if model_type in CONFIG_MAPPING else None


def _derived_layer_types(cfg: Mapping[str, Any]) -> list[str] | None:
    """Let transformers derive the per-layer attention pattern (e.g. Gemma2 alternation, Qwen2 max_window_layers)."""
    cls = _config_class(str(cfg.get("model_type", "")))
    if cls is None:
        return None
    try:
        derived = getattr(cls.from_dict(dict(cfg)), "layer_types", None)
    except CONFIG_ERRORS as e:
        raise ExportError(f"transformers rejects the source config ({e})") from e
    return list(derived) if isinstance(derived, (list, tuple)) else None


def _remap_sparse_step(cfg: dict[str, Any], n: int, keep: list[int], new: dict[int, int]) -> bool:
    """Qwen-MoE style: block i is sparse iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0."""
    step = cfg.get("decoder_sparse_step")
    if not isinstance(step, int) or step <= 1:
        return False
    dense = set(cfg.get("mlp_only_layers") or [])
    sparse = [i not in dense and (i + 1) % step == 0 for i in range(n)]
    cfg["decoder_sparse_step"] = 1
    cfg["mlp_only_layers"] = [new[i] for i in keep if not sparse[i]]
    return True


def _remap_index_fields(cfg: dict[str, Any], n: int, keep: list[int]) -> None:
    new = {old: j for j, old in enumerate(keep)}
    done = {"mlp_only_layers"} if _remap_sparse_step(cfg, n, keep, new) else set()
    for key in _INDEX_LISTS:
        if key not in done and isinstance(cfg.get(key), list):
            cfg[key] = sorted(new[i] for i in cfg[key] if i in new)
    if isinstance(cfg.get("max_window_layers"), int):  # Qwen2/Qwen3: sliding iff i >= max_window_layers
        cfg["max_window_layers"] = sum(i < cfg["max_window_layers"] for i in keep)
    if isinstance(cfg.get("first_k_dense_replace"), int):  # DeepSeek style: a dense prefix
        if cfg.get("moe_layer_freq", 1) != 1:
            raise ExportError("cannot express the kept MoE pattern with moe_layer_freq != 1 in the config")
        cfg["first_k_dense_replace"] = sum(i < cfg["first_k_dense_replace"] for i in keep)


def _slice_per_layer(cfg: dict[str, Any], n: int, keep: list[int]) -> None:
    for key, value in list(cfg.items()):
        if key in _NOT_PER_LAYER or key in _INDEX_LISTS or not isinstance(value, list) or len(value) != n:
            continue
        cfg[key] = [value[i] for i in keep]
        LOG.debug("sliced per-layer config field %s", key)


def _drop_stale_pattern(cfg: dict[str, Any]) -> None:
    """Gemma3/Cohere2 ``sliding_window_pattern`` only matters without ``layer_types``; drop it when it now lies."""
    period, types = cfg.get("sliding_window_pattern"), cfg.get("layer_types")
    if isinstance(period, int) and period > 0 and isinstance(types, list):
        implied = ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(len(types))]
        if implied != types:
            del cfg["sliding_window_pattern"]


def _validate(cfg: dict[str, Any], num_layers: int) -> None:
    cls = _config_class(str(cfg.get("model_type", "")))
    if cls is None:
        return
    try:
        built = cls.from_dict(dict(cfg))
    except CONFIG_ERRORS as e:
        raise ExportError(f"transformers rejects the pruned config ({e})") from e
    if layer_count(built) != num_layers:
        raise ExportError(f"pruned config declares {layer_count(built)} blocks, expected {num_layers}")
    want, got = cfg.get("layer_types"), getattr(built, "layer_types", None)
    if want is not None and list(got or []) != want:
        raise ExportError(f"transformers rebuilds layer_types={got} from the pruned config, expected {want}")


def prune_config(config: Mapping[str, Any], *, keep: Sequence[int], validate: bool = True) -> dict[str, Any]:
    """Return a new config dict for a model that keeps the listed original blocks.

    Sets the layer count, slices every top-level list as long as the old layer count (``layer_types``,
    ``mlp_layer_types``, per-layer window sizes, ...), writes an explicit ``layer_types`` where transformers
    derives the pattern from the block index (old Gemma2 configs, Gemma3 ``sliding_window_pattern``,
    Qwen2/Qwen3 ``max_window_layers``), and remaps block-index fields (``mlp_only_layers``,
    ``decoder_sparse_step``, ``max_window_layers``, ``first_k_dense_replace``).

    Args:
        config: The source ``config.json`` contents; not modified.
        keep: Original indices of the blocks to keep; sorted and deduplicated here.
        validate: Check the result by building it with the transformers config class, and write
            out index-derived ``layer_types``; ``False`` for the in-memory removal
            (:func:`layershear.model.surgery.remove_blocks`), which sets attributes of a live config.

    Returns:
        The new config dict.

    Raises:
        ExportError: Bad indices, or a pattern transformers cannot reproduce from the written config.
    """
    cfg = copy.deepcopy(dict(config))
    try:
        n = layer_count(cfg)
    except UnsupportedModelError as e:
        raise ExportError(str(e)) from e
    kept = check_keep(keep, n)
    if validate and "layer_types" not in cfg and (derived := _derived_layer_types(cfg)) is not None:
        cfg["layer_types"] = derived
    _remap_index_fields(cfg, n, kept)
    _slice_per_layer(cfg, n, kept)
    _drop_stale_pattern(cfg)
    for key in LAYER_COUNT_KEYS:
        if cfg.get(key) == n:
            cfg[key] = len(kept)
    if validate:
        _validate(cfg, len(kept))
    return cfg
