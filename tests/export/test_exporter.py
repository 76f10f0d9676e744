"""Exporter: streamed, renumbered, atomic checkpoints equal to the in-memory drop; model card."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import load, random_ids
from safetensors import safe_open

from layershear.errors import CheckpointError, ExportError
from layershear.export import exporter as export_mod
from layershear.export.card import RemovedBlock, render_model_card
from layershear.export.exporter import Exporter
from layershear.model.surgery import remove_blocks

DROP = {1, 2}
KEEP = [0, 3, 4, 5]


def test_export_equals_in_memory_drop(tiny_checkpoint, tmp_path: Path) -> None:
    name, path = tiny_checkpoint
    out = Exporter(path, max_shard_bytes=20_000).export(DROP, tmp_path / "out")
    source = load(path)
    pruned = load(out)
    ids = random_ids()  # longer than the sliding window, so a shifted pattern changes the logits
    with torch.inference_mode(), remove_blocks(source, DROP):
        expected = source(ids).logits
    with torch.inference_mode():
        torch.testing.assert_close(pruned(ids).logits, expected, atol=1e-5, rtol=1e-5)
    assert pruned.config.num_hidden_layers == 4
    config = json.loads((out / "config.json").read_text())
    if getattr(source.config, "layer_types", None) is not None:
        assert config["layer_types"] == [source.config.layer_types[i] for i in KEEP]
        assert pruned.config.layer_types == config["layer_types"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    tensors = {k: v for f in out.glob("*.safetensors") for k, v in safetensors.torch.load_file(f).items()}
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Old Gemma2 config (no layer_types): blocks alternate sliding/full by index; keep 0, 3, 4, 5.
        ("gemma2_old", ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]),
        # Qwen2 use_sliding_window + max_window_layers=3: blocks 3.. slide.
        ("qwen2_swa", ["full_attention", "sliding_attention", "sliding_attention", "sliding_attention"]),
        # Gemma3 sliding_window_pattern=3: blocks 2 and 5 are full.
        ("gemma3_text", ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]),
    ],
)
def test_index_derived_pattern_is_written_explicitly(name, expected, tiny_checkpoints, tmp_path: Path) -> None:
    path = tiny_checkpoints(name)
    assert "layer_types" not in json.loads((path / "config.json").read_text())
    out = Exporter(path).export(DROP, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["layer_types"] == expected
    assert load(out).config.layer_types == expected
    if name == "qwen2_swa":
        assert config["max_window_layers"] == 1
    if name == "gemma3_text":
        assert "sliding_window_pattern" not in config  # no longer true of the kept blocks


@pytest.mark.parametrize("name", ["gemma2_old", "qwen2_swa", "gemma3_text", "qwen3"])
@pytest.mark.parametrize("drop", [{1}, {0, 4}, {2, 5}])
def test_shifted_patterns_match_in_memory(name, drop, tiny_checkpoints, tmp_path: Path) -> None:
    """Drops that shift an index-derived pattern: the export must still equal the in-memory drop."""
    path = tiny_checkpoints(name)
    out = Exporter(path).export(drop, tmp_path / "out")
    source, ids = load(path), random_ids()
    with torch.inference_mode(), remove_blocks(source, drop):
        expected = source(ids).logits
        kept_types = list(source.config.layer_types)
    assert load(out).config.layer_types == kept_types
    with torch.inference_mode():
        torch.testing.assert_close(load(out)(ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_single_file_renumbered_and_tied(tiny_checkpoints, tmp_path: Path) -> None:
    path = tiny_checkpoints("llama_tied")
    out = Exporter(path).export(DROP, tmp_path / "out")
    assert not (out / "model.safetensors.index.json").exists()
    source = load(path).state_dict()
    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
        assert torch.equal(f.get_tensor("model.layers.1.mlp.up_proj.weight"), source["model.layers.3.mlp.up_proj.weight"])
    assert "lm_head.weight" not in keys
    assert {k.split(".")[2] for k in keys if k.startswith("model.layers.")} == {"0", "1", "2", "3"}
    model = load(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_small_files_card_and_extra_files(tiny_checkpoints, tmp_path: Path) -> None:
    path = tiny_checkpoints("llama")
    out = Exporter(path).export(DROP, tmp_path / "out", card="# card\n", extra_files={"layershear.json": "{}"})
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (path / name).read_bytes(), name
    assert (out / "README.md").read_text() == "# card\n"
    assert (out / "layershear.json").read_text() == "{}"
    import transformers

    assert transformers.AutoTokenizer.from_pretrained(out)("w5 w6")["input_ids"][-2:] == [5, 6]


def test_dtype_cast(tiny_checkpoints, tmp_path: Path) -> None:
    out = Exporter(tiny_checkpoints("qwen2"), dtype=torch.bfloat16).export(DROP, tmp_path / "out")
    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert f.get_tensor("model.layers.0.mlp.up_proj.weight").dtype == torch.bfloat16
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_existing_target_is_refused_then_replaced(tiny_checkpoints, tmp_path: Path) -> None:
    exporter = Exporter(tiny_checkpoints("llama"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(ExportError, match="exists; pass --overwrite"):
        exporter.export(DROP, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(ExportError, match=r"--overwrite replaces only a model folder .* holds other files \(keep.txt\)"):
        exporter.export(DROP, out, overwrite=True)       # not a model folder: its files are not deleted
    assert (out / "keep.txt").read_text() == "old"
    (out / "layershear.json").write_text("{}")           # an earlier layershear output may be replaced
    exporter.export(DROP, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_failure_mid_export_leaves_old_folder_and_no_temp(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    exporter = Exporter(tiny_checkpoints("llama"), max_shard_bytes=20_000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "layershear.json").write_text("{}")   # a previous output
    (out / "keep.txt").write_text("old")
    calls = []

    def failing_save(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)   # the disk fills up
        safetensors.torch.save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(export_mod, "save_file", failing_save)
    with pytest.raises(ExportError, match=f"writing {out} failed: No space left on device; nothing was changed"):
        exporter.export(DROP, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "layershear.json"] and (out / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_bad_drop_writes_nothing(tiny_checkpoints, tmp_path: Path) -> None:
    exporter = Exporter(tiny_checkpoints("llama"))
    for drop, match in (({6}, "out of range"), (set(range(6)), "cannot remove all")):
        with pytest.raises(ExportError, match=match):
            exporter.export(drop, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_refuses_source_as_target_and_pickle_only(tiny_checkpoints, tmp_path: Path) -> None:
    path = tiny_checkpoints("llama")
    with pytest.raises(ExportError, match="is the source"):
        Exporter(path).export(DROP, path, overwrite=True)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_bytes((path / "config.json").read_bytes())
    torch.save({"x": torch.zeros(1)}, pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only pickle weights \(pytorch_model.bin\).*save_pretrained"):
        Exporter(pickled)


def test_missing_block_tensors_are_refused(tiny_checkpoints, tmp_path: Path) -> None:
    path = tiny_checkpoints("llama")
    broken = tmp_path / "broken"
    broken.mkdir()
    tensors = {}
    for file in path.glob("*.safetensors"):
        tensors |= {k: v for k, v in safetensors.torch.load_file(file).items() if ".layers.4." not in k}
    safetensors.torch.save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    (broken / "config.json").write_bytes((path / "config.json").read_bytes())
    with pytest.raises(ExportError, match=r"no tensors for blocks \[4\]"):
        Exporter(broken).export(DROP, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_model_card() -> None:
    card = render_model_card(
        base_model="Qwen/Qwen2.5-0.5B", num_blocks=24,
        removed=[RemovedBlock(17, 0.0012, 0.611), RemovedBlock(5, None, None)],
        calibration="arc_easy:validation[:200], acc_norm", command="layershear run recipe.yaml", version="0.1.0",
    )
    front, _, body = card.removeprefix("---\n").partition("\n---\n")
    assert 'base_model: "Qwen/Qwen2.5-0.5B"' in front and "library_name: transformers" in front
    assert "- layershear" in front and "- pruned" in front
    assert "| 1 | 17 | 0.0012 | 0.6110 |" in body and "| 2 | 5 | n/a | n/a |" in body
    assert "2605.14075" in body and "Beyond Cosine Similarity" in body
    assert "layershear run recipe.yaml" in body and "0.1.0" in body and "arc_easy" in body


def test_exported_folder_has_normal_permissions(tiny_checkpoints, tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    out = Exporter(tiny_checkpoints("llama")).export({1}, tmp_path / "perm")
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
