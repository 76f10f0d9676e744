"""remove_blocks: in-memory removal matches a model built without the blocks, and restores everything."""

from __future__ import annotations

import pytest
import torch
from helpers import ARCHS, random_ids

from layershear.errors import LayershearError
from layershear.model.arch import decoder_blocks
from layershear.model.surgery import remove_blocks


def _layer_idxs(model: torch.nn.Module) -> list[tuple[str, int]]:
    return [(n, m.layer_idx) for n, m in model.named_modules() if isinstance(m.__dict__.get("layer_idx"), int)]


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_context_matches_model_built_without_blocks(name: str, models) -> None:
    """Copy the kept blocks' weights into a freshly built smaller model: same logits."""
    model = models(name)
    keep = [0, 3, 4, 5]
    small_config = type(model.config).from_dict(model.config.to_dict())
    small_config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None) is not None:
        small_config.layer_types = [model.config.layer_types[i] for i in keep]
    if getattr(small_config, "max_window_layers", None) is not None:
        small_config.max_window_layers = sum(i < model.config.max_window_layers for i in keep)
    small = type(model)(small_config).eval()
    state = model.state_dict()
    with remove_blocks(model, {1, 2}) as pruned:
        small.load_state_dict(pruned.state_dict())
        ids = random_ids()
        torch.testing.assert_close(pruned(ids).logits, small(ids).logits, atol=1e-5, rtol=1e-5)
    assert model.state_dict().keys() == state.keys()


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_restores_logits_config_and_layer_idx(name: str, models) -> None:
    model = models(name)
    ids = random_ids()
    with torch.inference_mode():
        before_logits = model(ids).logits
    before_config, before_idx = model.config.to_dict(), _layer_idxs(model)
    blocks = decoder_blocks(model)
    with remove_blocks(model, [4, 1]) as pruned:
        assert pruned is model
        assert len(decoder_blocks(model)) == 4 and model.config.num_hidden_layers == 4
        if getattr(model.config, "layer_types", None) is not None:
            assert model.config.layer_types == [before_config["layer_types"][i] for i in (0, 2, 3, 5)]
        assert [b.__dict__.get("layer_idx", None) for b in decoder_blocks(model)] in (
            [None] * 4, [0, 1, 2, 3])
        with torch.inference_mode():
            assert not torch.equal(model(ids).logits, before_logits)
    assert decoder_blocks(model) is blocks
    assert model.config.to_dict() == before_config and _layer_idxs(model) == before_idx
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, before_logits, atol=0, rtol=0)


def test_restores_after_exception(models) -> None:
    model = models("qwen2_swa")
    before_config, before_idx, blocks = model.config.to_dict(), _layer_idxs(model), decoder_blocks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with remove_blocks(model, {0, 5}):
            raise RuntimeError("boom")
    assert decoder_blocks(model) is blocks
    assert model.config.to_dict() == before_config and _layer_idxs(model) == before_idx


@pytest.mark.parametrize("name", ["llama", "qwen2_swa", "gemma3_text", "gpt_neox", "gpt2"])
def test_generation_with_cache_inside_context(name: str, models) -> None:
    model = models(name)
    ids = random_ids(batch=1, seq_len=6)
    with remove_blocks(model, {1, 2}):
        kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
        cached = model.generate(ids, use_cache=True, **kw)
        uncached = model.generate(ids, use_cache=False, **kw)
    assert cached.shape == (1, 14) and torch.equal(cached, uncached)


@pytest.mark.parametrize(
    ("drop", "match"),
    [({6}, "out of range"), ({-1}, "out of range"), (range(6), "cannot remove all 6 blocks"), (["x"], "out of range")],
)
def test_bad_indices(drop, match: str, models) -> None:
    model = models("llama")
    blocks = decoder_blocks(model)
    with pytest.raises(LayershearError, match=match):
        with remove_blocks(model, drop):
            pass
    assert decoder_blocks(model) is blocks and model.config.num_hidden_layers == 6


def test_empty_drop_is_a_no_op(models) -> None:
    model = models("llama")
    with remove_blocks(model, []) as same:
        assert len(decoder_blocks(same)) == 6
