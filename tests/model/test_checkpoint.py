"""layershear.model.checkpoint: a broken checkpoint folder is refused before (or right after) loading, with one
CheckpointError that names the file or tensor and the fix, and the folder is left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from layershear.errors import CheckpointError
from layershear.export.exporter import Exporter
from layershear.model.checkpoint import (
    INDEX,
    TOKENIZER_FILES,
    check_checkpoint,
    check_complete,
    check_finite,
    check_loading_info,
    check_remote_code,
    checkpoint_identity,
)
from layershear.model.loading import load_model

BLOCK_KEY = "model.layers.1.mlp.up_proj.weight"        # a 2-D tensor in a shard that holds several


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (hidden ones included) -> SHA-256 of its bytes ("dir" for folders)."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def read_index(folder: Path) -> dict:
    return json.loads((folder / INDEX).read_text())


def write_index(folder: Path, index: dict) -> None:
    (folder / INDEX).write_text(json.dumps(index, indent=2))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def rewrite_shard(path: Path, edit) -> None:
    """Load the shard at ``path``, let ``edit(tensors)`` change the dict in place, save it back."""
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def refused(folder: Path, match: str, **kwargs) -> str:
    """Assert load_model(folder) raises CheckpointError matching ``match`` and writes nothing into ``folder``."""
    before = snapshot(folder)
    with pytest.raises(CheckpointError, match=match) as info:
        load_model(str(folder), dtype="fp32", device="cpu", **kwargs)
    assert snapshot(folder) == before, "load_model changed the checkpoint folder"
    return str(info.value)


@pytest.fixture
def folder(tiny_lm_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny sharded Llama, to break."""
    return Path(shutil.copytree(tiny_lm_dir, tmp_path / "ckpt"))


def test_fixture_is_sharded_with_an_index(folder: Path) -> None:
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    weight_map = read_index(folder)["weight_map"]
    assert len(shards) > 2 and sorted(set(weight_map.values())) == shards
    assert sum(v == weight_map[BLOCK_KEY] for v in weight_map.values()) > 1


def test_good_checkpoint_loads_and_passes_every_check(folder: Path) -> None:
    before = snapshot(folder)
    files = check_checkpoint(folder)
    assert files.weight_map == read_index(folder)["weight_map"]
    assert files.config["num_hidden_layers"] == 4
    model, tokenizer = load_model(str(folder), dtype="fp32", device="cpu")
    check_finite(model, folder)
    assert len(model.model.layers) == 4 and tokenizer.bos_token == "<s>"
    check_loading_info({"missing_keys": [], "mismatched_keys": [], "unexpected_keys": set()}, folder)
    assert snapshot(folder) == before


def test_truncated_shard(folder: Path) -> None:
    shard = folder / read_index(folder)["weight_map"][BLOCK_KEY]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    refused(folder, rf"{re.escape(str(shard))} is not a readable safetensors file .*fetch the file again")


def test_index_is_not_json(folder: Path) -> None:
    (folder / INDEX).write_text('{"metadata": {}, "weight_map": {"lm_head.weight": ')
    refused(folder, rf"{re.escape(str(folder / INDEX))} is not valid JSON .*restore the file from the original checkpoint")


def test_index_names_a_missing_shard(folder: Path) -> None:
    name = read_index(folder)["weight_map"][BLOCK_KEY]
    (folder / name).unlink()
    refused(folder, rf"{re.escape(str(folder / INDEX))} names shard '{re.escape(name)}', which is not in "
                    rf"{re.escape(str(folder))}; fetch it again")


def test_index_omits_a_tensor_a_shard_holds(folder: Path) -> None:
    index = read_index(folder)
    shard = index["weight_map"].pop(BLOCK_KEY)
    write_index(folder, index)
    match = (rf"{re.escape(str(folder / INDEX))} omits tensor {re.escape(BLOCK_KEY)} that {re.escape(shard)} holds "
             r"\(1 omitted\); regenerate the index")
    refused(folder, match)
    before = snapshot(folder)
    with pytest.raises(CheckpointError, match=match):
        Exporter(folder)
    assert snapshot(folder) == before


def test_index_maps_a_tensor_to_the_wrong_shard(folder: Path) -> None:
    index = read_index(folder)
    right = index["weight_map"][BLOCK_KEY]
    wrong = next(f for f in sorted(set(index["weight_map"].values())) if f != right)
    index["weight_map"][BLOCK_KEY] = wrong
    write_index(folder, index)
    refused(folder, rf"maps tensor {re.escape(BLOCK_KEY)} to {re.escape(wrong)}, which does not hold it; regenerate the index")


class _Payload:
    """Unpickling this creates the file ``marker`` (what a malicious pytorch_model.bin could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_only_weights_are_refused_unread(folder: Path, tmp_path: Path) -> None:
    state = {}
    for shard in folder.glob("*.safetensors"):
        state.update(load_file(shard))
        shard.unlink()
    (folder / INDEX).unlink()
    marker = tmp_path / "unpickled"
    torch.save({**state, "_payload": _Payload(marker)}, folder / "pytorch_model.bin")
    message = refused(folder, r"holds only pickle weights \(pytorch_model\.bin\); layershear loads safetensors only")
    assert "convert it once: AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(NEW_DIR)" in message
    with pytest.raises(CheckpointError, match=r"holds only pickle weights"):
        Exporter(folder)
    assert not marker.exists(), "the pickle was unpickled"


def test_no_weights_at_all(folder: Path) -> None:
    for shard in folder.glob("*.safetensors"):
        shard.unlink()
    (folder / INDEX).unlink()
    refused(folder, rf"no model\.safetensors or {re.escape(INDEX)} in {re.escape(str(folder))}")


def test_no_tokenizer_files(folder: Path) -> None:
    for name in (*TOKENIZER_FILES, "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    refused(folder, rf"no tokenizer in {re.escape(str(folder))} \(none of tokenizer\.json, .*\); copy the tokenizer files")
    assert Exporter(folder).num_blocks == 4     # an export copies what is there: no tokenizer needed


def test_remote_code_is_refused_and_never_imported(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (folder / "modeling_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (folder / "tokenization_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    auto_map = {"AutoConfig": "modeling_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM",
                "AutoTokenizer": ["tokenization_x.XTokenizer", None]}
    edit_config(folder, auto_map=auto_map, model_type="x_custom")        # a model type transformers lacks
    match = (rf"{re.escape(str(folder))}/config\.json asks to run the folder's own code \(modeling_x\.py, "
             r"tokenization_x\.py, via auto_map\); .*--trust-remote-code")
    refused(folder, match)
    with pytest.raises(CheckpointError, match=match):
        Exporter(folder)
    assert not marker.exists(), "the folder's code was imported"
    config = json.loads((folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match=match):
        check_remote_code(folder, config, False)
    assert check_remote_code(folder, config, True) is None
    assert check_checkpoint(folder, trust_remote_code=True).config["auto_map"] == auto_map
    assert not marker.exists()


def test_auto_map_of_a_native_model_type_loads_the_builtin_class(folder: Path, tmp_path: Path) -> None:
    """Phi-3's official checkpoints carry an auto_map; with trust_remote_code=False passed explicitly,
    transformers loads its own class and the folder's code never runs."""
    marker = tmp_path / "imported"
    (folder / "modeling_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    edit_config(folder, auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    model, _ = load_model(str(folder), dtype="fp32", device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and not marker.exists()


@pytest.mark.parametrize(("value", "kind"), [(float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "Inf")])
def test_non_finite_weight_names_the_tensor(folder: Path, value: float, kind: str) -> None:
    key = "model.layers.2.self_attn.q_proj.weight"

    def poison(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key][3, 5] = value

    rewrite_shard(folder / read_index(folder)["weight_map"][key], poison)
    check_checkpoint(folder)       # the headers are fine: only the values are bad
    refused(folder, rf"tensor {re.escape(key)} of {re.escape(str(folder))} holds 1 non-finite value\(s\) \({kind}, as "
                    r"float32\); the checkpoint is corrupt.*re-download it or try --dtype fp32")


def test_check_finite_counts_bad_values_of_a_model(folder: Path) -> None:
    model, _ = load_model(str(folder), dtype="fp32", device="cpu")
    with torch.no_grad():
        model.lm_head.weight[0, :3] = float("nan")
    with pytest.raises(CheckpointError, match=r"tensor lm_head\.weight of here holds 3 non-finite value\(s\) \(NaN, as float32\)"):
        check_finite(model, "here")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"intermediate_size": 48}, r"holds tensor model\.layers\.0\.mlp\.down_proj\.weight with another shape than config\.json gives \(12 such\)"),
        ({"num_hidden_layers": 5}, r" lacks tensor model\.layers\.4\.input_layernorm\.weight that config\.json's architecture needs "
                                   r"\(9 such\); config\.json and the weights disagree: restore the original config\.json"),
        ({"num_hidden_layers": 3}, r" holds tensor model\.layers\.3\.input_layernorm\.weight that config\.json's architecture does "
                                   r"not have \(9 such\); config\.json and the weights disagree"),
    ],
    ids=["shape-mismatch", "missing-tensors", "unexpected-tensors"],
)
def test_config_disagreeing_with_the_tensors(folder: Path, changes: dict, match: str) -> None:
    edit_config(folder, **changes)
    check_checkpoint(folder)       # only loading can tell
    refused(folder, "^" + re.escape(str(folder)) + ".*" + match)


def test_check_loading_info_names_the_first_bad_tensor() -> None:
    mismatched = [("model.layers.1.mlp.up_proj.weight", torch.Size([64, 32]), torch.Size([48, 32])),
                  ("model.layers.0.mlp.up_proj.weight", torch.Size([64, 32]), torch.Size([48, 32]))]
    with pytest.raises(CheckpointError, match=r"^src holds tensor model\.layers\.0\.mlp\.up_proj\.weight with another shape "
                                              r"than config\.json gives \(2 such\)"):
        check_loading_info({"missing_keys": [], "mismatched_keys": mismatched, "unexpected_keys": []}, "src")
    with pytest.raises(CheckpointError, match=r"^src lacks tensor b that"):
        check_loading_info({"missing_keys": ["c", "b"], "unexpected_keys": ["a"]}, "src")


@pytest.fixture
def export(tiny_lm_dir: Path, tmp_path: Path) -> Path:
    """The tiny Llama without block 1 (3 blocks), in several shards with an index."""
    out = Exporter(tiny_lm_dir, max_shard_bytes=40_000).export({1}, tmp_path / "out")
    assert (out / INDEX).is_file()
    return out


def _drop_from_export(out: Path, key: str) -> None:
    index = read_index(out)
    shard = index["weight_map"].pop(key)
    assert sum(v == shard for v in index["weight_map"].values()) > 0     # the shard keeps other tensors
    rewrite_shard(out / shard, lambda tensors: tensors.pop(key))
    write_index(out, index)


def test_check_complete_passes_on_a_good_export(export: Path) -> None:
    check_complete(export, export)
    assert json.loads((export / "config.json").read_text())["num_hidden_layers"] == 3


def test_check_complete_refuses_an_export_missing_a_tensor(export: Path) -> None:
    key = "model.layers.2.mlp.down_proj.weight"
    _drop_from_export(export, key)
    check_checkpoint(export)       # shards and index agree: only the architecture tells
    with pytest.raises(CheckpointError, match=rf"^the export to target lacks tensor {re.escape(key)} that config\.json's "
                                              r"architecture needs \(1 such\)"):
        check_complete(export, "target")


def test_check_complete_refuses_an_export_with_an_extra_tensor(export: Path) -> None:
    index = read_index(export)
    shard = index["weight_map"]["model.layers.0.mlp.up_proj.weight"]
    extra = "model.layers.3.mlp.up_proj.weight"                  # block 3 is gone from the 3-block export
    rewrite_shard(export / shard, lambda tensors: tensors.update({extra: torch.zeros(64, 32)}))
    index["weight_map"][extra] = shard
    write_index(export, index)
    check_checkpoint(export)
    with pytest.raises(CheckpointError, match=rf"^the export to target holds tensor {re.escape(extra)} that config\.json's "
                                              r"architecture does not have \(1 such\)"):
        check_complete(export, "target")


def test_checkpoint_identity_follows_the_weights(folder: Path, tiny_lm_dir: Path) -> None:
    first = checkpoint_identity(folder)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert checkpoint_identity(folder) == first
    assert checkpoint_identity(tiny_lm_dir) == first          # the content counts, not where it lies
    shard = folder / read_index(folder)["weight_map"][BLOCK_KEY]
    data = bytearray(shard.read_bytes())
    assert len(data) < 2**20                                  # the whole shard is sampled
    middle = len(data) // 2
    data[middle] ^= 0x01
    shard.write_bytes(bytes(data))
    changed = checkpoint_identity(folder)
    assert changed != first
    data[middle] ^= 0x01
    shard.write_bytes(bytes(data))
    assert checkpoint_identity(folder) == first
    (folder / shard.name).rename(folder / f"renamed-{shard.name}")
    assert checkpoint_identity(folder) not in (first, changed)


def test_index_with_an_empty_weight_map(folder: Path) -> None:
    write_index(folder, {"metadata": {"total_size": 0}, "weight_map": {}})
    refused(folder, r"model\.safetensors\.index\.json has no weight_map of tensor -> file; restore the index")


def test_a_tokenizer_passed_in_is_not_required_in_the_folder(folder: Path, tiny_lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    from layershear.inputs import model_and_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    for name in TOKENIZER_FILES + ("tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    model, tok, _ = model_and_tokenizer(str(folder), tokenizer)
    assert tok is tokenizer and type(model).__name__ == "LlamaForCausalLM"
