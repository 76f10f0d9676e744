"""Placement: replica / split / streamed chosen from the weights' size and the measured free memory."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from layershear.errors import LayershearError
from layershear.model.checkpoint import check_checkpoint
from layershear.model.placement import Placement, checkpoint_weight_bytes, choose_placement, split_device_map

GIB = 2**30


def test_each_placement_is_chosen_by_a_simulated_device_budget():
    assert choose_placement(10 * GIB, [80 * GIB]).kind == "replica"
    assert choose_placement(70 * GIB, [80 * GIB]).kind != "replica"              # over 80% of one GPU
    assert choose_placement(140 * GIB, [80 * GIB] * 3).kind == "split"
    assert choose_placement(140 * GIB, [80 * GIB]).kind == "streamed"
    assert choose_placement(140 * GIB, [80 * GIB] * 2).kind == "streamed"        # 128 GiB usable < 140 GiB
    chosen = choose_placement(1 * GIB, [80 * GIB] * 2, "streamed")                # the override wins
    assert chosen == Placement("streamed", GIB, (80 * GIB, 80 * GIB), "asked for")
    assert chosen.describe() == "placement: streamed (asked for; weights 1.00 GiB, free 80.0 + 80.0 GiB)"


def test_bad_placements_are_clear_errors():
    with pytest.raises(LayershearError, match="Unknown placement 'gpu'"):
        choose_placement(1, [2], "gpu")
    with pytest.raises(LayershearError, match="needs two or more GPUs"):
        choose_placement(1, [2], "split")


def test_split_device_map_gives_contiguous_block_ranges(tiny_checkpoints):
    config = tf.AutoConfig.from_pretrained(tiny_checkpoints("llama"))
    per_block = 4 * (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 2 * 32)          # fp32 bytes of one tiny block
    device_map = split_device_map(config, torch.float32, [int(3.2 * per_block / 0.8)] * 3)
    blocks = [device_map[f"model.layers.{k}"] for k in range(6)]
    assert blocks == sorted(blocks) and len(set(blocks)) >= 2                  # in order, over several GPUs
    with pytest.raises(LayershearError, match="does not fit on 2 GPUs"):
        split_device_map(config, torch.float32, [per_block, per_block])


def test_weight_bytes_come_from_the_shard_headers(tiny_checkpoints):
    from layershear.model.arch import meta_model

    path = tiny_checkpoints("llama")
    numel = sum(p.numel() for p in meta_model(tf.AutoConfig.from_pretrained(path)).parameters())
    files = check_checkpoint(path)
    assert checkpoint_weight_bytes(files, torch.float32) == 4 * numel
    assert checkpoint_weight_bytes(files, torch.bfloat16) == 2 * numel
