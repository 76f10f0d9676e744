"""Opt-in ``torch.compile`` of the decoder blocks' parts, for long scoring jobs on CUDA.

Compiled forwards are faster on a GPU once compiled, because compilation can fuse the eager
element-wise kernels (RMSNorm, rotary embeddings, SwiGLU); but the compile time counts within a
job, and in bf16 the fused kernels round differently, so compilation is off by default. The
measurements (``scripts/bench_compile.py``) are in docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import shutil

import torch

from layershear.errors import LayershearError
from layershear.model.arch import decoder_blocks

LOG = logging.getLogger(__name__)


def compile_blocks(model: torch.nn.Module, *, dynamic: bool = True) -> list[str]:
    """Compile every child module of every decoder block in place (``nn.Module.compile``).

    The blocks themselves stay eager: the Scorer's block-input caching hooks sit on them, and
    removing a block (:mod:`layershear.model.surgery`) swaps whole blocks. Their children (attention,
    MLP, norms, whatever the architecture has) are compiled with inductor; parameter names, the
    state dict and the exported checkpoint are unchanged. Compilation happens lazily at the first
    forward; ``dynamic=True`` avoids a recompile for each new batch shape.

    Args:
        model: a causal LM that :func:`layershear.model.arch.decoder_blocks` supports.
        dynamic: compile with dynamic shapes (batch rows and widths change between passes).

    Returns:
        The qualified names of the compiled modules, e.g. ``["model.layers.0.self_attn", ...]``.

    Raises:
        UnsupportedModelError: the model's decoder blocks cannot be found.
        LayershearError: no C/C++ compiler on PATH (inductor builds its CPU kernels and Triton its
            launchers with one).
    """
    compilers = ("c++", "g++", "clang++") if next(model.parameters()).device.type == "cpu" else ("cc", "gcc", "clang")
    if not any(shutil.which(c) for c in compilers):
        raise LayershearError(f"--compile needs a compiler on PATH ({' or '.join(compilers)}); install one "
                              "(e.g. apt install g++) or drop --compile")
    blocks = {id(block) for block in decoder_blocks(model)}
    names = []
    for name, module in model.named_modules():
        if id(module) in blocks:
            for child_name, child in module.named_children():
                child.compile(dynamic=dynamic)
                names.append(f"{name}.{child_name}")
    LOG.info("compiled %d modules of %d decoder blocks", len(names), len(blocks))
    return names
