"""Find a checkpoint folder (local or on the Hub) and load a supported model from it."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layershear.errors import CheckpointError, UnsupportedModelError
from layershear.model.arch import CONFIG_ERRORS, block_layout
from layershear.model.devices import resolve_device, resolve_dtype

LOG = logging.getLogger(__name__)

_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"]


def _looks_like_path(name: str) -> bool:
    if name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or "\\" in name:
        return True
    return "/" in name and Path(name.split("/")[0]).exists()


def _download(repo_id: str, revision: str | None, code: bool = False) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        patterns = _HUB_PATTERNS + (["*.py"] if code else [])      # a trusted checkpoint's own code
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except (HfHubHTTPError, OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModelError(
            f"Could not download {repo_id!r} from the Hugging Face Hub: {reason}; "
            "check the id, your network, or pass a local folder"
        ) from e


def resolve_checkpoint(name_or_path: str, *, revision: str | None = None, code: bool = False) -> Path:
    """Return a local folder holding the checkpoint ``name_or_path``.

    Args:
        name_or_path: A local folder with ``config.json`` or a Hub id such as ``"Qwen/Qwen2.5-0.5B"``.
        revision: Hub branch, tag or commit; ignored for local folders.
        code: also fetch the checkpoint's ``*.py`` files (``trust_remote_code``).

    Returns:
        The folder (for a Hub id, the snapshot in the local HF cache; only json, safetensors,
        tokenizer, ``*.model``, ``*.jinja`` and ``*.txt`` files are fetched).

    Raises:
        UnsupportedModelError: The folder does not exist or has no ``config.json``, or the download failed.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UnsupportedModelError(f"no config.json in {path}; is it a Hugging Face model folder?")
        return path
    if _looks_like_path(name_or_path) or path.exists():
        raise UnsupportedModelError(f"Model folder {name_or_path!r} does not exist")
    folder = _download(name_or_path, revision, code)
    if not (folder / "config.json").is_file():
        raise UnsupportedModelError(f"no config.json in {folder} (downloaded {name_or_path!r})")
    return folder


def load_model(
    name_or_path: str, *, dtype: str | torch.dtype = "auto", device: str | torch.device = "auto",
    revision: str | None = None, trust_remote_code: bool = False, load_tokenizer: bool = True,
    device_map: dict[str, int] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """Load a supported causal LM and its tokenizer, in eval mode on ``device``.

    The folder is checked before any weights are read (:func:`layershear.model.checkpoint.check_checkpoint`:
    readable config and shards, a complete index, safetensors only, a tokenizer, no ``auto_map``
    unless trusted) and the architecture from ``config.json``, so a bad checkpoint fails fast; after
    loading, transformers' loading report must show no missing, mismatched or unexpected tensor and
    every weight must be finite.

    Args:
        name_or_path: Local folder or Hub id (see ``resolve_checkpoint``).
        dtype: Weight dtype: ``"auto"`` (bf16 on CUDA, fp32 on CPU), ``"fp32"``, ``"bf16"``, ``"fp16"``
            or a ``torch.dtype`` (:func:`layershear.model.devices.resolve_dtype`).
        device: ``"auto"`` (CUDA when visible, else CPU), ``"cpu"``, ``"cuda[:N]"`` or a ``torch.device``.
        revision: Hub revision.
        trust_remote_code: let transformers run Python files of the checkpoint (``auto_map``);
            False (the default) refuses such a checkpoint. Passed explicitly to every loader.
        load_tokenizer: also load (and require) the folder's tokenizer; False when the caller has one.
        device_map: module -> GPU (:func:`layershear.model.placement.split_device_map`): the model is
            split over those GPUs by accelerate (``device`` is then ignored); None = all on ``device``.

    Returns:
        ``(model, tokenizer)``; the tokenizer is None when ``load_tokenizer`` is False.

    Raises:
        UnsupportedModelError: Unknown or unsupported architecture, or an unreadable checkpoint.
        CheckpointError: a checkpoint that is corrupt, incomplete, pickle-only, without tokenizer,
            asks to run its code, disagrees with its config, or holds NaN/Inf weights.
        LayershearError: an unknown dtype or device name, or CUDA asked for but not visible.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from layershear.model.checkpoint import check_checkpoint, check_finite, check_loading_info, mismatch_report

    device = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device)
    path = resolve_checkpoint(name_or_path, revision=revision, code=trust_remote_code)
    check_checkpoint(path, trust_remote_code=trust_remote_code, tokenizer=load_tokenizer)
    trust = {"trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(path, **trust)
    except (*CONFIG_ERRORS, OSError) as e:
        raise UnsupportedModelError(f"transformers cannot read the config in {path}: {e}") from e
    block_layout(config)
    try:
        split = {"device_map": device_map} if device_map is not None else {}
        model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                           output_loading_info=True, **split, **trust)
    except RuntimeError as e:  # a shape mismatch between config.json and the tensors
        mismatch_report(path, trust_remote_code=trust_remote_code)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: config.json and the weights disagree ({reason}); restore the "
                              "checkpoint's original config.json") from e
    except (*CONFIG_ERRORS, OSError) as e:
        raise UnsupportedModelError(f"cannot load {name_or_path!r} as a causal LM: {e}") from e
    check_loading_info(info, path)
    tokenizer = None
    try:
        if load_tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(path, **trust)
    except (*CONFIG_ERRORS, OSError) as e:
        raise CheckpointError(f"cannot load the tokenizer of {path}: {str(e).strip().splitlines()[0]}") from e
    block_layout(model)
    model = (model if device_map is not None else model.to(device)).eval()
    check_finite(model, path)
    LOG.info("loaded %s (%s) on %s as %s", name_or_path, type(model).__name__, device, dtype)
    return model, tokenizer


def load_placed(name_or_path: str, *, placement: str = "auto", dtype: str | torch.dtype = "auto",
                device: str | torch.device = "auto", revision: str | None = None, trust_remote_code: bool = False,
                load_tokenizer: bool = True, free_bytes: tuple[int, ...] | None = None):
    """Load a supported causal LM placed by ``placement`` (:mod:`layershear.model.placement`:
    ``auto``, ``replica``, ``split``, ``streamed``), chosen from its weights' size and the measured
    free memory of the devices.

    Returns:
        ``(model, tokenizer, placement, weights)``: ``weights`` is the
        :class:`layershear.model.streaming.ShardWeights` to stream the blocks from (``streamed``),
        else None; the model's blocks are then ``meta`` tensors.

    Raises:
        as :func:`load_model`; LayershearError for ``split`` without two GPUs or a model too large for them.
    """
    from transformers import AutoConfig, AutoTokenizer

    from layershear.model.checkpoint import check_checkpoint
    from layershear.model.placement import checkpoint_weight_bytes, choose_placement, free_device_bytes, split_device_map
    from layershear.model.streaming import streamed_model

    device = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device)
    path = resolve_checkpoint(name_or_path, revision=revision, code=trust_remote_code)
    files = check_checkpoint(path, trust_remote_code=trust_remote_code, tokenizer=load_tokenizer)
    free = free_bytes or free_device_bytes(device)
    chosen = choose_placement(checkpoint_weight_bytes(files, dtype), free, placement)
    if chosen.kind == "split":
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        chosen = dataclasses.replace(chosen, device_map=split_device_map(config, dtype, free))
    if chosen.kind != "streamed":
        model, tokenizer = load_model(name_or_path, dtype=dtype, device=device, revision=revision,
                                      trust_remote_code=trust_remote_code, load_tokenizer=load_tokenizer,
                                      device_map=chosen.device_map)
        return model, tokenizer, chosen, None
    model, weights = streamed_model(path, dtype=dtype, device=device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code) if load_tokenizer else None
    LOG.info("loaded %s (%s) on %s as %s, blocks streamed from %s", name_or_path, type(model).__name__, device, dtype, path)
    return model, tokenizer, chosen, weights
