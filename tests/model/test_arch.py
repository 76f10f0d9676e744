"""Block layouts, generic detection and refusal of unsupported or state-sharing architectures."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from helpers import ARCHS, TINY, load

from layershear.errors import UnsupportedModelError
from layershear.model.arch import SUPPORTED_MODEL_TYPES, BlockLayout, block_layout, decoder_blocks

REQUIRED = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "olmo2", "phi3", "gpt_neox", "gpt2"}


def test_supported_types_cover_the_required_architectures() -> None:
    assert set(SUPPORTED_MODEL_TYPES) >= REQUIRED


def test_layout_from_model_config_and_dict_agree(tiny_checkpoint) -> None:
    name, path = tiny_checkpoint
    model = load(path)
    layout = block_layout(model)
    assert layout == block_layout(model.config) == block_layout(json.loads((path / "config.json").read_text()))
    blocks = decoder_blocks(model)
    assert isinstance(blocks, torch.nn.ModuleList) and len(blocks) == 6
    keys = model.state_dict().keys()
    assert any(k.startswith(layout.tensor_prefix + "5.") for k in keys)
    assert json.loads((path / "config.json").read_text())[layout.num_layers_key] == 6


def test_table_entries() -> None:
    assert block_layout({"model_type": "gpt2", "n_layer": 2}) == BlockLayout("gpt2", "transformer.h", "transformer.h.", "n_layer")
    assert block_layout({"model_type": "gpt_neox", "num_hidden_layers": 2}).tensor_prefix == "gpt_neox.layers."


def test_untested_causal_lm_is_found_generically() -> None:
    config = tf.GemmaConfig(**TINY, num_key_value_heads=2, head_dim=8)
    layout = block_layout(tf.GemmaForCausalLM(config))
    assert (layout.blocks_path, layout.tensor_prefix, layout.num_layers_key) == (
        "model.layers", "model.layers.", "num_hidden_layers")
    assert block_layout(config) == layout  # from the config alone, via a meta-device model


def test_unknown_architecture_names_class_and_lists_supported() -> None:
    model = tf.BertForMaskedLM(tf.BertConfig(**TINY))
    with pytest.raises(UnsupportedModelError, match=r"BertForMaskedLM.*Supported model types: llama"):
        block_layout(model)


def test_unknown_model_type_in_config_dict_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="Supported model types"):
        block_layout({"model_type": "no_such_model", "num_hidden_layers": 4})


def test_kv_shared_layers_are_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="num_kv_shared_layers"):
        block_layout({"model_type": "gemma3n_text", "num_hidden_layers": 4, "num_kv_shared_layers": 2})
    config = tf.Gemma3nTextConfig(
        **{**TINY, "num_hidden_layers": 4}, num_key_value_heads=2, num_kv_shared_layers=2,
        layer_types=["sliding_attention", "full_attention"] * 2,
    )
    with pytest.raises(UnsupportedModelError, match="shares its KV cache"):
        block_layout(config)


def test_index_scaled_attention_is_refused() -> None:
    cfg_cls, model_cls, kwargs, _ = ARCHS["gpt2"]
    with pytest.raises(UnsupportedModelError, match="scale_attn_by_inverse_layer_idx"):
        block_layout(cfg_cls(**kwargs, scale_attn_by_inverse_layer_idx=True))


def test_weights_shared_between_blocks_are_refused() -> None:
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**TINY, num_key_value_heads=2))
    model.model.layers[3] = model.model.layers[1]
    with pytest.raises(UnsupportedModelError, match="shares weights between blocks 1 and 3"):
        decoder_blocks(model)
