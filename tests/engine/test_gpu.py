"""CUDA checks of the fast engine (skipped without a GPU): bf16 SDPA with packed masks, pinned host cache."""

from __future__ import annotations

import pytest
import torch
from helpers import CharTokenizer, load, mc_items

from layershear.engine.fused import Fusion, fused_kernels
from layershear.engine.prefix_cache import CachePlan
from layershear.scoring.scorer import Scorer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("name", ["llama", "qwen3", "gemma2"])
def test_fast_engine_on_cuda_matches_the_reference(tiny_checkpoints, name):
    model = load(tiny_checkpoints(name)).cuda()
    items = mc_items(12)
    ref = Scorer(model, CharTokenizer(), items, batch_size=4, engine="reference")
    for plan in (CachePlan("device", 1, 0, 0, 0), CachePlan("host", 1, 0, 0, 0), CachePlan("host", 2, 0, 0, 0)):
        fast = Scorer(model, CharTokenizer(), items, batch_size=4, cache_plan=plan)
        for parent in (frozenset(), frozenset({2})):
            blocks = [b for b in range(6) if b not in parent]
            got, want = fast.children(parent, blocks), ref.children(parent, blocks)
            for b in blocks:      # fp32 on CUDA: TF32 is off by default for matmuls in PyTorch
                torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-3, rtol=1e-5)


def test_bf16_on_cuda_stays_close_to_fp32(tiny_checkpoints):
    model = load(tiny_checkpoints("llama")).cuda()
    items = mc_items(12)
    fp32 = Scorer(model, CharTokenizer(), items, batch_size=4).accuracy({1}).loglikelihoods
    bf16 = Scorer(model.to(torch.bfloat16), CharTokenizer(), items, batch_size=4).accuracy({1}).loglikelihoods
    assert (fp32 - bf16).abs().max() < 0.5      # nats; bf16 keeps 8 mantissa bits


def test_fused_norm_is_one_kernel_on_cuda(tiny_checkpoints):
    """The premise of layershear.engine.fused: F.rms_norm is one CUDA kernel (allowing a second launch) where
    the eager RMSNorm is several."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    model = load(tiny_checkpoints("llama")).cuda().to(torch.bfloat16)
    fusion = Fusion.of(model)
    norm, x = fusion.norms[0], torch.randn(64, 32, device="cuda", dtype=torch.bfloat16)

    def kernels() -> int:
        norm(x)   # warm-up outside the profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            norm(x)
            torch.cuda.synchronize()
        return sum(e.device_type == DeviceType.CUDA for e in prof.events())

    eager = kernels()
    with fused_kernels(fusion):
        fused = kernels()
        torch.testing.assert_close(norm(x).float(), type(norm).forward(norm, x).float(), atol=0.05, rtol=0.02)
    assert fused <= 2 < eager, (fused, eager)
