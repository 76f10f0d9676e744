"""The whole prune job: :func:`prune_model` -> :class:`PruneRun` (``save_pretrained``, ``push_to_hub``)."""

from layershear.pipeline.prune import SEARCHES, prune_model
from layershear.pipeline.run import HeldOut, PruneEvent, PruneRun

__all__ = ["SEARCHES", "HeldOut", "PruneEvent", "PruneRun", "prune_model"]
