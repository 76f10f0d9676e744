"""prune_config (layershear.model.layer_config): per-layer config lists sliced to the kept blocks."""

from __future__ import annotations

import pytest

from layershear.errors import ExportError
from layershear.model.layer_config import prune_config


def test_prune_config_slices_per_layer_lists_only() -> None:
    config = {
        "model_type": "toy_untested", "num_hidden_layers": 4, "eos_token_id": [1, 2, 3, 4],
        "intermediate_size": [10, 20, 30, 40], "no_rope_layers": [1, 0, 1, 0], "moe_layers": [1, 3],
        "rope_scaling": {"rope_type": "longrope", "long_factor": [1, 2, 3, 4]},
    }
    pruned = prune_config(config, keep=[3, 0, 1, 1])
    assert pruned["num_hidden_layers"] == 3 and pruned["eos_token_id"] == [1, 2, 3, 4]
    assert pruned["intermediate_size"] == [10, 20, 40] and pruned["no_rope_layers"] == [1, 0, 0]
    assert pruned["moe_layers"] == [1, 2]
    assert pruned["rope_scaling"]["long_factor"] == [1, 2, 3, 4]
    assert config["num_hidden_layers"] == 4 and config["intermediate_size"] == [10, 20, 30, 40]  # input untouched
    for keep, match in (([0, 9], "out of range"), ([], "keep at least one")):
        with pytest.raises(ExportError, match=match):
            prune_config(config, keep=keep)


def test_prune_config_remaps_moe_sparse_step() -> None:
    config = {
        "model_type": "qwen2_moe", "num_hidden_layers": 6, "decoder_sparse_step": 2, "mlp_only_layers": [3],
        "vocab_size": 128, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_experts": 4, "num_experts_per_tok": 2,
    }
    # Sparse blocks: 1 and 5 ((i + 1) % 2 == 0, 3 is mlp-only). Keep 0, 1, 3, 5 -> new 1 and 3 sparse.
    pruned = prune_config(config, keep=[0, 1, 3, 5])
    assert pruned["decoder_sparse_step"] == 1 and pruned["mlp_only_layers"] == [0, 2]


def test_prune_config_is_accepted_by_transformers_for_gpt2() -> None:
    pruned = prune_config({"model_type": "gpt2", "n_layer": 6, "n_embd": 32, "n_head": 4}, keep=[0, 5])
    assert pruned["n_layer"] == 2 and "num_hidden_layers" not in pruned
