"""layershear.model.loading: one clear error for a missing folder, config or Hub model; load_model's dtype/device names."""

from __future__ import annotations

from pathlib import Path

import pytest

from layershear.errors import LayershearError
from layershear.model.loading import resolve_checkpoint


def test_resolve_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(LayershearError, match="Model folder './nope/model' does not exist"):
        resolve_checkpoint("./nope/model")
    with pytest.raises(LayershearError, match="no config.json in"):
        resolve_checkpoint(str(tmp_path))
    with pytest.raises(LayershearError, match="Could not download 'org/name' from the Hugging Face Hub: .*pass a local"):
        resolve_checkpoint("org/name")


def test_load_model_takes_dtype_and_device_names_as_from_pretrained_users_write_them(tiny_lm_dir):
    import torch

    from layershear.model.loading import load_model

    model, tokenizer = load_model(str(tiny_lm_dir), dtype="auto", device="auto")   # auto on CPU: fp32
    assert next(model.parameters()).dtype == torch.float32 and not model.training and tokenizer.bos_token == "<s>"
    assert next(load_model(str(tiny_lm_dir), dtype="bf16", device="cpu")[0].parameters()).dtype == torch.bfloat16
    with pytest.raises(LayershearError, match="Unknown dtype 'fp8'; choose one of: auto, bf16, fp16, fp32"):
        load_model(str(tiny_lm_dir), dtype="fp8")
