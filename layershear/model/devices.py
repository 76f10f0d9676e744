"""The only place where user strings become torch dtypes and devices."""

from __future__ import annotations

import torch

from layershear.errors import LayershearError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a torch device.

    ``auto`` picks ``cuda`` when a CUDA device is visible, else ``cpu``.

    Raises:
        LayershearError: ``cuda`` was asked for but no CUDA device is visible, or the name is unknown.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise LayershearError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LayershearError(f"Device {name!r} asked for but no CUDA device is visible; use --device cpu")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """Map a dtype name to a torch dtype; ``None``/``auto`` means bf16 on CUDA and fp32 on CPU.

    Raises:
        LayershearError: the name is not one of fp32, bf16, fp16 (or their long forms).
    """
    if name in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return DTYPES[name.lower()]
    except KeyError as e:
        choices = ", ".join(sorted({"fp32", "bf16", "fp16", "auto"}))
        raise LayershearError(f"Unknown dtype {name!r}; choose one of: {choices}") from e
