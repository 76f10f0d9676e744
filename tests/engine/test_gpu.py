"""CUDA checks of the fast engine (skipped without a GPU): bf16 SDPA with packed masks, pinned host cache,
a batch queued without a host sync, and a model split over two GPUs (skipped with fewer)."""

from __future__ import annotations

import pytest
import torch
from helpers import CharTokenizer, load, mc_items

from layershear.engine.fused import Fusion, fused_kernels
from layershear.engine.packing import packed_loglikelihoods
from layershear.engine.prefix_cache import CachePlan
from layershear.model.arch import decoder_blocks
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


def test_a_packed_batch_queues_without_a_host_sync(tiny_checkpoints):
    """What tests/engine/test_in_flight.py shows on the meta device, on CUDA: torch's sync debug mode
    raises on any call that makes the host wait for the device."""
    model = load(tiny_checkpoints("llama")).cuda()
    engine = Scorer(model, CharTokenizer(), mc_items(6), batch_size=4).engine
    batch = engine.batches[0]
    want = packed_loglikelihoods(model, batch, pad_id=engine.pad_id)        # also warms the pinned-memory pool
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = packed_loglikelihoods(model, batch, pad_id=engine.pad_id, to_host=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), want, atol=0, rtol=0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_model_split_over_two_gpus_equals_one_gpu(tiny_checkpoints):
    import transformers as tf

    from layershear.model.loading import load_model
    from layershear.model.placement import split_device_map

    path = tiny_checkpoints("llama")
    per_block = sum(p.numel() * 4 for p in decoder_blocks(load(path))[0].parameters())
    device_map = split_device_map(tf.AutoConfig.from_pretrained(path), torch.float32, [int(4.5 * per_block / 0.8)] * 2)
    assert set(device_map.values()) == {0, 1}, device_map
    split, _ = load_model(path, dtype="fp32", device_map=device_map, load_tokenizer=False)
    one = load(path).cuda()
    items = mc_items(24)
    scorers = [Scorer(m, CharTokenizer(), items, batch_size=2) for m in (split, one)]
    assert scorers[0].engine.depth == 3                 # two GPUs, plus one batch queued behind them
    for parent in (frozenset(), frozenset({2})):
        blocks = [b for b in range(6) if b not in parent]
        got, want = (s.children(parent, blocks) for s in scorers)
        for b in blocks:
            torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-4, rtol=1e-5)
    cache = scorers[0].engine._prefix                  # each cached block input on its block's GPU
    blocks = decoder_blocks(split)
    for k, states in cache.states.items():
        for state in states.values():
            assert state.device == next(blocks[k].parameters()).device
