"""resolve_checkpoint (layershear.model.loading): one clear error for a missing folder, config or Hub model."""

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
