"""Load a split from the Hugging Face Hub with ``datasets.load_dataset`` (the users' usual path).

``datasets`` is imported inside the function: machines that only score (e.g. a GPU box) may not
have it installed.
"""

from __future__ import annotations

import logging
from typing import Any

from layershear.data.benchmarks.base import TaskSpec
from layershear.errors import BenchmarkError

LOG = logging.getLogger(__name__)


def load_hub_rows(spec: TaskSpec, split: str) -> list[dict[str, Any]]:
    """Fetch ``split`` of ``spec.hub_path``/``spec.hub_name`` as a list of HF-format rows.

    Raises:
        BenchmarkError: ``datasets`` is not installed, or the download/lookup failed (no network,
            unknown split, ...); the message is one line.
    """
    try:
        import datasets
    except ImportError as e:
        raise BenchmarkError(
            f"source='hub' for {spec.name} needs the `datasets` package (pip install datasets); "
            "or use the local copy (source='local', LAYERSHEAR_DATA)"
        ) from e
    where = spec.hub_path + (f" ({spec.hub_name})" if spec.hub_name else "")
    LOG.info("loading %s split %s from the Hub", where, split)
    try:
        dataset = datasets.load_dataset(spec.hub_path, spec.hub_name, split=split)
    except Exception as e:
        first_line = (str(e).strip().splitlines() or [""])[0][:300]
        raise BenchmarkError(
            f"Could not load {where} split {split!r} for task {spec.name} from the Hugging Face Hub "
            f"({type(e).__name__}: {first_line}); check the network or use local data (LAYERSHEAR_DATA)"
        ) from e
    return list(dataset)
