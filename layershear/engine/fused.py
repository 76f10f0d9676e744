"""Fewer element-wise kernels per decoder block: the fast engine's RMSNorm and rotary embeddings.

In eager mode a Llama-style block (Llama, Mistral, Qwen2/3, OLMo-2, Phi-3, ...) spends a large
part of its GPU time outside matmuls (profiles in docs/benchmarks.md):

- **RMSNorm** (twice per block): Hugging Face's ``LlamaRMSNorm`` and kin run six element-wise
  kernels over the hidden states in fp32 (cast up, square, mean, rsqrt, scale, cast down) and a
  seventh for the weight, about 36 bytes of memory traffic per element against 4 for a fused
  kernel. Swapped for ``torch.nn.functional.rms_norm``, which dispatches to
  ``aten::_fused_rms_norm``: one kernel on CUDA with fp32 accumulation (a composite on CPU that
  also applies the weight before rounding).
- **Rotary position embeddings** (``apply_rotary_pos_emb``, Su et al. 2021, as transformers writes
  it): ``q * cos + rotate_half(q) * sin`` is five kernels per tensor (mul, neg, cat, mul, add);
  rewritten as ``addcmul(q * cos, roll(q, d/2), sin_signed)`` with ``sin_signed = cat(-sin_1, sin_2)``,
  three kernels and about 30% less traffic; ``rotate_half(q) * sin == roll(q, d/2) * sin_signed``.

Nothing is swapped unless it is checked, on a probe input in fp32 (at a large and a small scale,
so that epsilon shows), to equal what it replaces, and only calls of the replaced form take the
fused path (a norm called with extra inputs, such as a gate, or a rotary call with other
arguments, partial rotary dimensions or mixed dtypes runs the eager code). Gemma's
``(1 + weight)`` norms and other variants stay eager, as do modules that accelerate hooks (their
forward is replaced to move tensors between devices). In fp32 the results equal the eager ones to
rounding (``tests/engine/test_fused.py``). In bf16 they differ by rounding: the fused norm rounds once
where the eager module rounds twice (before and after the weight), and ``addcmul`` rounds once
where ``a + b * c`` rounds twice; about a quarter of bf16 elements move by one unit in the last place.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType

import torch
import torch.nn.functional as F

LOG = logging.getLogger(__name__)

_PROBE_TOL = 1e-5
_ROTARY = "apply_rotary_pos_emb"


def _probe(*shape: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _close(want, got: torch.Tensor) -> bool:
    return (isinstance(want, torch.Tensor) and want.shape == got.shape
            and torch.allclose(want.float(), got.float(), rtol=_PROBE_TOL, atol=_PROBE_TOL))


def _epsilon(module: torch.nn.Module) -> float | None:
    for attr in ("variance_epsilon", "eps"):
        value = getattr(module, attr, None)
        if isinstance(value, float):
            return value
    return None


def _norm_matches(module: torch.nn.Module, eps: float) -> bool:
    """Whether the module's own forward equals F.rms_norm with its weight, in fp32, on a random probe."""
    weight = module.weight
    # rows at a small scale too: there mean(x^2) is about eps, so a different epsilon shows
    probe = torch.cat((_probe(4, weight.shape[-1]), _probe(4, weight.shape[-1], seed=1, scale=1e-3)))
    probe = probe.to(weight.device)
    with torch.no_grad():
        try:
            want = type(module).forward(module, probe)
        except Exception:   # a forward with other inputs than a norm's: not ours to swap
            return False
        return _close(want, F.rms_norm(probe, tuple(weight.shape), weight.float(), eps))


def fusable_norms(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The RMSNorm modules of ``model`` that :func:`fused_kernels` swaps for ``F.rms_norm``.

    A module qualifies when its class name ends in ``RMSNorm``, it has a 1-D ``weight`` on a real
    device and a float ``variance_epsilon`` or ``eps``, no accelerate hook (``_hf_hook``), and its
    eager forward equals ``F.rms_norm(x, weight.shape, weight, eps)`` on a probe of shape
    ``[8, hidden]`` in fp32, half of it at scale 3 and half at 1e-3 (tolerance 1e-5).

    Returns:
        The qualifying modules, in ``model.modules()`` order (none for LayerNorm models such as GPT-NeoX).
    """
    found = []
    for module in model.modules():
        weight, eps = getattr(module, "weight", None), _epsilon(module)
        if (not type(module).__name__.endswith("RMSNorm") or eps is None or hasattr(module, "_hf_hook")
                or not isinstance(weight, torch.Tensor) or weight.ndim != 1 or weight.is_meta):
            continue
        if _norm_matches(module, eps):
            found.append(module)
        else:
            LOG.debug("%s: forward differs from F.rms_norm on the probe; left eager", type(module).__name__)
    return found


def rotary_embedding(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding of ``q`` and ``k`` in three kernels each (see the module docstring).

    Args:
        q, k: ``[batch, heads, seq, head_dim]`` (or with ``unsqueeze_dim=2``, ``[batch, seq, heads, head_dim]``).
        cos, sin: ``[batch, seq, head_dim]``, the halves repeated as transformers' rotary modules return them.

    Returns:
        ``(q_embed, k_embed)``, shapes and dtypes of ``q`` and ``k``.
    """
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    half = sin.shape[-1] // 2
    signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)   # [batch, 1, seq, head_dim]: small
    return (torch.addcmul(q * cos, q.roll(half, dims=-1), signed),
            torch.addcmul(k * cos, k.roll(half, dims=-1), signed))


def _rotary_for(eager: Callable) -> Callable:
    def apply(*args, **kwargs):
        if len(args) == 4 and set(kwargs) <= {"unsqueeze_dim"} and all(isinstance(a, torch.Tensor) for a in args):
            q, k, cos, sin = args
            if cos.shape[-1] == q.shape[-1] == k.shape[-1] and q.dtype == k.dtype == cos.dtype == sin.dtype:
                return rotary_embedding(q, k, cos, sin, **kwargs)
        return eager(*args, **kwargs)

    apply.eager = eager
    return apply


_ROTARY_PARAMETERS = ["q", "k", "cos", "sin", "unsqueeze_dim"]


def _rotary_matches(eager: Callable) -> bool:
    try:
        params = inspect.signature(eager).parameters
    except (TypeError, ValueError):
        return False
    if list(params) != _ROTARY_PARAMETERS or params["unsqueeze_dim"].default != 1:   # another form: leave it
        return False
    q, k, angles = _probe(2, 4, 5, 8, seed=1), _probe(2, 2, 5, 8, seed=2), _probe(2, 5, 4, seed=3)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    try:
        want = eager(q, k, cos, sin)
    except Exception:   # another signature: not ours to swap
        return False
    got = rotary_embedding(q, k, cos, sin)
    return isinstance(want, tuple) and len(want) == 2 and all(_close(w, g) for w, g in zip(want, got))


def rotary_modules(model: torch.nn.Module) -> list[ModuleType]:
    """The transformers modeling modules (``modeling_llama``, ...) of ``model``'s layers whose
    ``apply_rotary_pos_emb`` equals :func:`rotary_embedding` on a probe in fp32 (tolerance 1e-5)."""
    found = []
    for name in dict.fromkeys(type(m).__module__ for m in model.modules()):
        namespace = sys.modules.get(name)
        eager = getattr(namespace, _ROTARY, None)
        eager = getattr(eager, "eager", eager)   # already swapped by a running fused_kernels
        if callable(eager) and _rotary_matches(eager):
            found.append(namespace)
    return found


@dataclass
class Fusion:
    """What :func:`fused_kernels` swaps: ``norms`` (:func:`fusable_norms`) and the modeling modules
    whose rotary function is swapped (:func:`rotary_modules`)."""

    norms: list[torch.nn.Module] = field(default_factory=list)
    rotary: list[ModuleType] = field(default_factory=list)

    @classmethod
    def of(cls, model: torch.nn.Module) -> Fusion:
        return cls(norms=fusable_norms(model), rotary=rotary_modules(model))

    def describe(self) -> str:
        """One line for the CLI, e.g. ``fused kernels: 65 RMSNorm modules -> F.rms_norm; rotary
        embeddings of modeling_llama in 3 kernels``."""
        if not self.norms and not self.rotary:
            return "fused kernels: none (no RMSNorm or rotary embedding of the checked forms)"
        rotary = ", ".join(ns.__name__.rsplit(".", 1)[-1] for ns in self.rotary)
        return (f"fused kernels: {len(self.norms)} RMSNorm modules -> F.rms_norm"
                + (f"; rotary embeddings of {rotary} in 3 kernels" if rotary else ""))

    def summary(self) -> dict[str, object]:
        """For ``layershear.json``: how many norms are swapped and which modeling modules' rotary."""
        return {"rms_norm_modules": len(self.norms), "rotary_modules": [ns.__name__ for ns in self.rotary]}


def _fused_norm(module: torch.nn.Module) -> Callable[..., torch.Tensor]:
    eager = type(module).forward.__get__(module)
    shape, eps = tuple(module.weight.shape), _epsilon(module)

    def forward(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        # extra inputs (a gated norm's gate) or another dtype (norms kept in fp32 under bf16): eager
        if args or kwargs or hidden_states.dtype != module.weight.dtype:
            return eager(hidden_states, *args, **kwargs)
        return F.rms_norm(hidden_states, shape, module.weight, eps)

    return forward


@contextmanager
def fused_kernels(fusion: Fusion) -> Iterator[tuple[int, int]]:
    """Within the block, the norms of ``fusion`` compute with ``F.rms_norm`` (input and output
    ``[..., hidden]`` in the weight's dtype; an input of another dtype takes the eager forward) and
    its modeling modules' ``apply_rotary_pos_emb`` is :func:`rotary_embedding` (partial rotary or
    mixed dtypes take the eager function). Hooks stay in place; the eager forms come back on exit,
    also on error. Nested use swaps nothing more.

    Yields:
        ``(norms swapped, rotary functions swapped)``.
    """
    norms, rotary = [], []
    try:
        for module in fusion.norms:
            if "forward" not in vars(module):   # else already swapped, or replaced by someone else
                module.forward = _fused_norm(module)
                norms.append(module)
        for namespace in fusion.rotary:
            eager = getattr(namespace, _ROTARY)
            if not hasattr(eager, "eager"):
                setattr(namespace, _ROTARY, _rotary_for(eager))
                rotary.append((namespace, eager))
        yield len(norms), len(rotary)
    finally:
        for module in norms:
            del module.forward
        for namespace, eager in rotary:
            setattr(namespace, _ROTARY, eager)
