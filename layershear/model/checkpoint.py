"""Check a checkpoint folder before any work is spent on it: readable config and shards, a complete
index, safetensors only (no pickle), a tokenizer, no remote code unless trusted, finite weights.

Every check raises :class:`layershear.errors.CheckpointError` with one line that names the file (or
tensor) and the fix. :func:`check_checkpoint` reads only JSON and the safetensors headers (a few KB
per shard); :func:`check_finite` looks at the loaded weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layershear.errors import CheckpointError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: files any one of which makes a folder's tokenizer loadable by ``AutoTokenizer``
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.tiktoken")

_CONVERT = ("convert it once: AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(NEW_DIR) (transformers reads "
            "the pickle with weights_only=True and writes safetensors), then use NEW_DIR")


@dataclass(frozen=True)
class CheckpointFiles:
    """What :func:`check_checkpoint` found: the parsed ``config.json`` and every tensor's shard.

    ``weight_map`` maps each tensor name to the shard file (relative to ``folder``) that holds it,
    as the shards' own headers say (the index is checked to agree with them).
    """

    folder: Path
    config: dict[str, Any]
    weight_map: dict[str, str]


def read_json(path: Path) -> Any:
    """The JSON in ``path``; raises CheckpointError naming the file when it is unreadable or malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); restore the file from the original checkpoint") from e


def check_remote_code(folder: Path, config: dict[str, Any], trust_remote_code: bool) -> None:
    """Refuse a config whose ``auto_map`` points at Python files in the folder unless trusted, when
    transformers has no class of its own for the ``model_type`` (with one it loads that class and runs
    no code of the folder, as ``trust_remote_code=False`` is passed explicitly).

    transformers would otherwise ask "run the custom code? [y/N]" on a terminal (hidden behind a
    progress bar) and execute the folder's code on "y".
    """
    if config.get("auto_map") and not trust_remote_code and not _native(config.get("model_type")):
        names = ", ".join(sorted({str(v).split(".")[0] + ".py" for v in _flat(config["auto_map"].values())}))
        raise CheckpointError(f"{folder}/config.json asks to run the folder's own code ({names}, via auto_map); "
                              "layershear does not run it unless you pass --trust-remote-code (trust_remote_code=True)")


def _native(model_type: Any) -> bool:
    """Whether transformers has its own class for ``model_type`` (then, with ``trust_remote_code=False``,
    it loads that class and ignores ``auto_map``: Phi-3's official checkpoints still carry one)."""
    from transformers import CONFIG_MAPPING

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING


def _flat(values: Iterable[Any]) -> Iterable[str]:
    for value in values:
        if isinstance(value, list | tuple):
            yield from (str(v) for v in value if v)
        else:
            yield str(value)


def _shard_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # SafetensorError (truncated, bad header) or OSError
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); the download or copy is "
                              "incomplete: fetch the file again") from e


def _weight_map(folder: Path) -> dict[str, str]:
    if (folder / INDEX).is_file():
        index = read_json(folder / INDEX)
        listed = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(listed, dict) or not listed or not all(isinstance(v, str) for v in listed.values()):
            raise CheckpointError(f"{folder / INDEX} has no weight_map of tensor -> file; restore the index")
        found: dict[str, str] = {}
        for file in sorted(set(listed.values())):
            if Path(file).name != file or not (folder / file).is_file():
                raise CheckpointError(f"{folder / INDEX} names shard {file!r}, which is not in {folder}; fetch it again")
            for key in _shard_keys(folder / file):
                found.setdefault(key, file)
        for key, file in listed.items():
            if found.get(key) != file:
                raise CheckpointError(f"{folder / INDEX} maps tensor {key} to {file}, which does not hold it; "
                                      "regenerate the index (save_pretrained writes one)")
        omitted = sorted(set(found) - set(listed))
        if omitted:
            raise CheckpointError(f"{folder / INDEX} omits tensor {omitted[0]} that {found[omitted[0]]} holds "
                                  f"({len(omitted)} omitted); regenerate the index (save_pretrained writes one)")
        return found
    if (folder / SINGLE).is_file():
        return {key: SINGLE for key in _shard_keys(folder / SINGLE)}
    pickled = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if pickled:
        raise CheckpointError(f"{folder} holds only pickle weights ({pickled[0]}); layershear loads safetensors only, "
                              "as unpickling can run code; " + _CONVERT)
    raise CheckpointError(f"no {SINGLE} or {INDEX} in {folder}; is it a Hugging Face model folder?")


def check_tokenizer(folder: Path) -> None:
    """Refuse a folder with no tokenizer file (transformers' own error is a page long)."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(f"no tokenizer in {folder} (none of {', '.join(TOKENIZER_FILES)}); copy the tokenizer "
                              "files of the base model into it, or pass a tokenizer")


def check_checkpoint(folder: Path, *, trust_remote_code: bool = False, tokenizer: bool = True) -> CheckpointFiles:
    """Check ``folder`` before loading or exporting it.

    Args:
        folder: a local Hugging Face model folder.
        trust_remote_code: allow a config with ``auto_map`` (code in the folder).
        tokenizer: also require tokenizer files (loading needs them; an export copies what is there).

    Returns:
        The config and the shard of every tensor.

    Raises:
        CheckpointError: malformed ``config.json`` or index, a shard named by the index missing, a
            truncated or corrupt shard, an index that omits or misplaces a tensor, pickle-only
            weights, no weights, no tokenizer, or ``auto_map`` without ``trust_remote_code``.
    """
    config = read_json(folder / "config.json")
    if not isinstance(config, dict):
        raise CheckpointError(f"{folder}/config.json is not a JSON object; restore it from the original checkpoint")
    check_remote_code(folder, config, trust_remote_code)
    weight_map = _weight_map(folder)
    if tokenizer:
        check_tokenizer(folder)
    return CheckpointFiles(folder, config, weight_map)


def _all_finite(tensor: torch.Tensor, chunk: int = 2**26) -> bool:
    flat = tensor.detach().reshape(-1)      # in chunks: no full-size bool temporary (1 GB for a 128k x 8k embedding)
    return all(bool(torch.isfinite(flat[i:i + chunk]).all()) for i in range(0, flat.numel(), chunk))


def check_finite(model: torch.nn.Module, source: str | Path) -> None:
    """Refuse weights holding NaN or Inf (after the cast to the model's dtype).

    A NaN weight makes every log-likelihood NaN, and argmax over NaN picks choice 0: the
    "accuracy" would be the share of documents whose gold is the first choice.

    Raises:
        CheckpointError: naming the first non-finite tensor and how many values are bad.
    """
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not _all_finite(tensor):
            bad = int((~torch.isfinite(tensor)).sum())
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
            raise CheckpointError(f"tensor {name} of {source} holds {bad} non-finite value(s) ({kind}, as "
                                  f"{str(tensor.dtype).removeprefix('torch.')}); the checkpoint is corrupt, or its "
                                  "values overflow this dtype: re-download it or try --dtype fp32")


def mismatch_report(folder: Path, *, trust_remote_code: bool = False) -> None:
    """Name the first tensor whose shape disagrees with ``config.json`` (transformers' own error says
    only "look at the above report"): load on the meta device with ``ignore_mismatched_sizes``.

    Raises:
        CheckpointError: naming the tensor, when there is one.
    """
    from transformers import AutoModelForCausalLM

    try:
        _, info = AutoModelForCausalLM.from_pretrained(folder, device_map="meta", ignore_mismatched_sizes=True,
                                                       output_loading_info=True, use_safetensors=True,
                                                       trust_remote_code=trust_remote_code)
    except (RuntimeError, ValueError, OSError):
        return
    check_loading_info(info, folder)


def check_loading_info(info: dict[str, Any], source: str | Path) -> None:
    """Refuse a load where transformers had to invent or drop tensors (``output_loading_info``):
    a config that disagrees with the tensors, or a checkpoint missing some.

    Raises:
        CheckpointError: naming the first missing, mismatched or unexpected tensor.
    """
    for kind, what in (("missing_keys", "lacks tensor {} that config.json's architecture needs"),
                       ("mismatched_keys", "holds tensor {} with another shape than config.json gives"),
                       ("unexpected_keys", "holds tensor {} that config.json's architecture does not have")):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(kind) or ())
        if keys:
            raise CheckpointError(f"{source} {what.format(keys[0])} ({len(keys)} such); config.json and the "
                                  "weights disagree: restore the original config.json and shards")


def check_complete(folder: Path, target: str | Path, *, trust_remote_code: bool = False) -> None:
    """Check that the checkpoint in ``folder`` (an export not yet renamed to ``target``) loads with
    exactly the tensors its architecture needs: transformers builds it on the meta device (no
    weights are read) and its loading report must list no missing, mismatched or unexpected tensor,
    so ``AutoModelForCausalLM.from_pretrained(target)`` will not invent random weights.

    Raises:
        CheckpointError: naming the first missing or extra tensor.
    """
    from transformers import AutoModelForCausalLM

    try:
        _, info = AutoModelForCausalLM.from_pretrained(folder, device_map="meta", output_loading_info=True,
                                                       use_safetensors=True, trust_remote_code=trust_remote_code)
    except (RuntimeError, ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"the export to {target} does not load: {reason}") from e
    check_loading_info(info, f"the export to {target}")


def checkpoint_identity(folder: Path, *, sample_bytes: int = 2**20) -> str:
    """A SHA-256 that changes when the checkpoint changes, read in well under a second: the config,
    generation config and tokenizer files whole, and for every ``*.safetensors`` file its name, size
    and its first and last ``sample_bytes`` (the first start with the header: tensor names, dtypes,
    shapes, offsets). (Hashing whole shards of a 70B model would take
    minutes; a Hub snapshot's folder name, its commit, is part of ``folder``'s identity upstream.)"""
    import hashlib

    digest = hashlib.sha256()
    for name in ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
                 "chat_template.jinja", *TOKENIZER_FILES):      # small files the results depend on: whole
        if (folder / name).is_file():
            digest.update(f"{name}\0".encode() + (folder / name).read_bytes())
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as f:
            digest.update(f.read(sample_bytes))
            f.seek(max(size - sample_bytes, 0))
            digest.update(f.read(sample_bytes))
    return digest.hexdigest()


__all__ = [
    "INDEX",
    "SINGLE",
    "TOKENIZER_FILES",
    "CheckpointFiles",
    "check_checkpoint",
    "check_complete",
    "check_finite",
    "check_loading_info",
    "check_remote_code",
    "check_tokenizer",
    "checkpoint_identity",
    "read_json",
]
