"""Batches in flight: the fast engine's per-batch scoring reads nothing back from the device, so the
host queues the next batches before the first finishes (a model split over GPUs runs as a pipeline);
results are read back ``depth`` batches later, with the same numbers."""

from __future__ import annotations

import pytest
import torch
from helpers import ARCHS, CharTokenizer, load, mc_items, reuse_plan

from layershear.engine.forward import InFlight, pipeline_depth
from layershear.engine.fused import Fusion, fused_kernels
from layershear.engine.packing import PACKABLE_MODEL_TYPES, PackedBatch, packed_loglikelihoods
from layershear.model.arch import decoder_blocks
from layershear.scoring.scorer import Scorer

PACKABLE = [n for n, (cfg, _, kw, _) in ARCHS.items() if cfg(**kw).model_type in PACKABLE_MODEL_TYPES]


@pytest.mark.parametrize("name", PACKABLE)
@pytest.mark.parametrize("full_logits", [False, True])
def test_a_packed_batch_reads_nothing_back_from_the_device(tiny_checkpoints, name, full_logits):
    """On the ``meta`` device every tensor has a shape and no value: any read of a device value by
    the host (``.item()``, ``bool()``, ``nonzero``, ``unique``, a copy to the CPU) raises there. The
    whole scoring of a packed batch (masks, blocks with fused kernels, LM head, log-softmax, sums)
    runs there to its end, so on a GPU it queues without waiting for the device."""
    model = load(tiny_checkpoints(name))
    engine = Scorer(model, CharTokenizer(), mc_items(6), batch_size=4).engine
    batch = engine.batches[0]
    assert isinstance(batch, PackedBatch)
    want = packed_loglikelihoods(model, batch, pad_id=engine.pad_id, full_logits=full_logits)
    meta = model.to("meta")
    with fused_kernels(Fusion.of(meta)):
        got = packed_loglikelihoods(meta, batch, pad_id=engine.pad_id, full_logits=full_logits, to_host=False)
    assert got.device.type == "meta"
    assert got.shape == want.shape == (len(batch.requests),)
    assert got.dtype == want.dtype == torch.float64


def test_in_flight_reads_back_the_oldest_beyond_its_depth():
    out = torch.zeros(4, dtype=torch.float64)
    results = InFlight(out, depth=2)
    results.put([0], torch.tensor([1.0], dtype=torch.float64))
    results.put([1, 2], torch.tensor([2.0, 3.0], dtype=torch.float64))
    assert out.tolist() == [0, 0, 0, 0] and len(results.queue) == 2      # both still queued
    results.put((slice(3, 4),), torch.tensor([4.0], dtype=torch.float64))
    assert out.tolist() == [1, 0, 0, 0] and len(results.queue) == 2      # the oldest was read back
    assert results.drain() is out
    assert out.tolist() == [1, 2, 3, 4] and not results.queue


def test_the_depth_changes_no_number(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    assert pipeline_depth(model) == 2             # one device, plus one batch queued behind it
    scorers = [Scorer(model, CharTokenizer(), mc_items(12), batch_size=2) for _ in range(2)]
    scorers[1].engine.depth = 1
    assert len(scorers[0].engine.batches) > 2
    for parent in (frozenset(), frozenset({2})):
        blocks = [b for b in range(6) if b not in parent]
        got, want = scorers[0].children(parent, blocks), scorers[1].children(parent, blocks)
        for b in blocks:
            assert torch.equal(got[b].loglikelihoods, want[b].loglikelihoods)


def test_greedy_steps_read_nothing_back_but_the_results(tiny_checkpoints, monkeypatch):
    """The engine's whole step (the prefix cache's capture and injection, stacked candidates, step
    reuse) on the ``meta`` device: the only reads from the device are the queued results."""
    model = load(tiny_checkpoints("qwen3"))
    scorer = Scorer(model, CharTokenizer(), mc_items(12), batch_size=4, cache_plan=reuse_plan())
    model.to("meta")
    read = []

    def meta_read(self):
        _index, result = self.queue.popleft()
        read.append(result.device.type)
    monkeypatch.setattr(InFlight, "_read", meta_read)
    for parent in (frozenset(), frozenset({2})):
        scorer.children(parent, [b for b in range(6) if b not in parent])
    stats = scorer.engine.stats
    assert stats.stacked_runs > 0 and stats.cache_bytes > 0        # stacking and the prefix cache ran
    assert read == ["meta"] * stats.forward_passes


@pytest.mark.parametrize("name", ["llama_tied", "gemma3_text"])
def test_the_engine_under_accelerates_device_map_hooks_equals_the_plain_model(tiny_checkpoints, name):
    """``--placement split`` loads the model with accelerate's device map, whose hooks move each
    module's inputs to its device. Here every module is on the CPU, with the hooks forced on: the
    prefix cache, stacking and the LM head's gather run under them, with the same numbers."""
    from accelerate import dispatch_model

    path = tiny_checkpoints(name)
    hooked = load(path)
    device_map = {f"model.{child}": "cpu" for child, _ in hooked.model.named_children()} | {
        child: "cpu" for child, _ in hooked.named_children() if child != "model"}
    hooked = dispatch_model(hooked, device_map=device_map, main_device="cpu", force_hooks=True)
    assert hasattr(decoder_blocks(hooked)[0], "_hf_hook") and hasattr(hooked.get_output_embeddings(), "_hf_hook")
    scorers = [Scorer(m, CharTokenizer(), mc_items(12), batch_size=2) for m in (hooked, load(path))]
    for parent in (frozenset(), frozenset({2})):
        blocks = [b for b in range(6) if b not in parent]
        got, want = (s.children(parent, blocks) for s in scorers)
        for b in blocks:
            assert torch.equal(got[b].loglikelihoods, want[b].loglikelihoods)
    assert scorers[0].engine.stats.stacked_runs > 0
