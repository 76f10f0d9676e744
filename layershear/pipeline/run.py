"""What a prune job reports while it runs (:class:`PruneEvent`) and what it returns (:class:`PruneRun`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layershear.scoring.accuracy import ModelAccuracy
from layershear.scoring.evaluation import TaskResult
from layershear.search.baseline import MetricRemoval
from layershear.search.result import SearchResult


@dataclass(frozen=True)
class PruneEvent:
    """What :func:`prune_model` reports while it runs (the library never prints).

    ``kind``: ``note`` (a caveat about the data, e.g. a fallback split), ``info`` (a line of the
    plan or of a finished step), ``stage`` (a stage starts: ``text`` describes it, ``total`` counts
    its passes, None when unknown) or ``progress`` (``count`` more passes of the current stage are
    done; ``text`` names the model being scored).
    """

    kind: Literal["note", "info", "stage", "progress"]
    text: str = ""
    count: int = 0
    total: int | None = None


EventFn = Callable[[PruneEvent], None]


class EngineProgress:
    """Turns the engine's per-label batch counts (:data:`layershear.engine.loglikelihood.ProgressFn`)
    into ``progress`` events that count passes done since the previous event."""

    def __init__(self, emit: EventFn) -> None:
        self.emit, self.label, self.done = emit, None, 0

    def __call__(self, label: str, done: int, total: int) -> None:
        step = done - self.done if label == self.label and done > self.done else done
        self.label, self.done = label, done
        self.emit(PruneEvent("progress", label, count=step))


def draw_calibration(calib, data, emit: EventFn):
    """The calibration set (:func:`layershear.inputs.calibration_set`), its notes and a one-line summary reported."""
    from layershear.inputs import calibration_set, describe_calibration

    calibration = calibration_set(calib, data)
    for note in calibration.notes:
        emit(PruneEvent("note", note))
    emit(PruneEvent("info", describe_calibration(calibration)))
    return calibration


def load_for_job(model, tokenizer, emit: EventFn, **load):
    """``(model, tokenizer, source)`` (:func:`layershear.inputs.model_and_tokenizer`, ``load``: dtype,
    device, revision), behind a ``loading`` stage."""
    from layershear.inputs import model_and_tokenizer

    emit(PruneEvent("stage", f"loading {getattr(model, 'name_or_path', model)}"))
    return model_and_tokenizer(model, tokenizer, **load)


def place_for_job(model, tokenizer, emit: EventFn, *, placement: str = "auto", **load):
    """``(model, tokenizer, source, weights, chosen)`` as :func:`load_for_job`, for a model given by
    id or folder placed by ``placement`` (:func:`layershear.model.loading.load_placed`, the choice
    ``chosen`` emitted as an info line); ``weights``: the block weights to stream (``streamed``),
    else None. A loaded model is used as it is (``placement`` ``auto`` or ``replica``; ``chosen`` None).

    Raises:
        LayershearError: ``split`` or ``streamed`` asked for a model passed in memory; as ``load_placed``.
    """
    from layershear.errors import LayershearError

    if not isinstance(model, str | os.PathLike):
        if placement not in ("auto", "replica"):
            raise LayershearError(f"--placement {placement} applies to a model given by Hub id or folder, not one "
                                  "loaded in memory; pass its folder")
        return (*load_for_job(model, tokenizer, emit, **load), None, None)
    from layershear.engine.distributed import min_across
    from layershear.model.devices import resolve_device
    from layershear.model.loading import load_placed
    from layershear.model.placement import free_device_bytes

    emit(PruneEvent("stage", f"loading {model}"))
    device = resolve_device(load.get("device", "auto"))
    free = min_across(free_device_bytes(device), device)        # every process places alike
    loaded, tok, chosen, weights = load_placed(os.fspath(model), placement=placement, load_tokenizer=tokenizer is None,
                                               free_bytes=free, **load)
    emit(PruneEvent("info", chosen.describe()))
    return loaded, tokenizer or tok, os.fspath(model), weights, chosen


@dataclass(frozen=True)
class HeldOut:
    """Held-out evaluation of the model before (``base``) and after (``pruned``) the removal."""

    suite: str
    base: tuple[TaskResult, ...]
    pruned: tuple[TaskResult, ...]


@dataclass
class PruneRun:
    """The result of :func:`prune_model`.

    Attributes:
        source: checkpoint the export streams from (Hub id or folder).
        revision: its Hub revision.
        num_blocks: decoder blocks of the full model.
        removed: original indices of the removed blocks, in removal order.
        metric: what chose them (``accuracy`` or a baseline metric).
        strategy: how (``greedy``, ``beam(W)``, ``one-shot``, ``iterative``).
        search: every step's candidates (``metric="accuracy"``), else None.
        baseline: the baseline metric's scores (``metric`` a baseline), else None.
        full, final: calibration accuracy of the full and the pruned model.
        held_out: before/after evaluation on held-out documents, if asked for.
        record: the contents of ``layershear.json``.
        calibration: the calibration recipe's name.
        fingerprint: the scored model's weights, when it was passed in memory (checked at export).
        saved_to: the folder :meth:`save_pretrained` last wrote (None before).
        trust_remote_code: the checkpoint's own code may run (when the export is checked to load).
    """

    source: str
    revision: str | None
    num_blocks: int
    removed: tuple[int, ...]
    metric: str
    strategy: str
    full: ModelAccuracy
    final: ModelAccuracy
    record: dict[str, Any]
    calibration: str
    search: SearchResult | None = None
    baseline: MetricRemoval | None = None
    held_out: HeldOut | None = None
    fingerprint: dict | None = field(default=None, repr=False)   # a model passed in memory (see Exporter.check_weights)
    saved_to: Path | None = None
    trust_remote_code: bool = False

    @property
    def kept(self) -> tuple[int, ...]:
        """Original indices of the blocks that stay, in order."""
        return tuple(b for b in range(self.num_blocks) if b not in self.removed)

    @property
    def steps(self) -> tuple:
        """Every step of the accuracy search (:class:`layershear.search.result.SearchStep`); () for a baseline."""
        return self.search.steps if self.search is not None else ()

    @property
    def cost(self) -> dict[str, Any]:
        """What the search cost: seconds, and for accuracy the engine's counted work (``layershear.json``'s ``cost``)."""
        return self.record["cost"]

    def model_card(self) -> str:
        """The model card (README.md) of the pruned checkpoint."""
        from layershear import __version__
        from layershear.export.card import RemovedBlock, render_model_card

        removed = [RemovedBlock(s.chosen.block_idx, s.chosen.relevance, s.chosen.accuracy) for s in self.steps] or \
                  [RemovedBlock(b, None, None) for b in self.removed]
        return render_model_card(base_model=self.source, num_blocks=self.num_blocks, removed=removed,
                                 calibration=self.calibration, command=self.record["command"], version=__version__,
                                 metric=self.metric, strategy=self.strategy)

    def save_pretrained(self, save_directory: str | os.PathLike[str], *, overwrite: bool = False,
                        max_shard_size: int | str = "5GB") -> Path:
        """Write the pruned checkpoint: safetensors shards and index, config, tokenizer and other small
        files, the model card and ``layershear.json``, atomically (a folder beside the target, renamed
        into place when complete), streamed from :attr:`source` without building the model.

        Raises:
            ExportError: an existing target without ``overwrite`` (or one that is not a model folder,
                or the source), another run writing it, too little disk space, a checkpoint that is
                not the scored model, an unusable source or a failed write (nothing half-written is
                left, a previous output stays intact).
        """
        from layershear.export.exporter import Exporter, parse_size
        from layershear.export.record import dumps

        exporter = Exporter(self.source, revision=self.revision, max_shard_bytes=parse_size(max_shard_size),
                            trust_remote_code=self.trust_remote_code)
        if self.fingerprint is not None:
            exporter.check_weights(self.fingerprint)
        self.saved_to = exporter.export(self.removed, save_directory, overwrite=overwrite, card=self.model_card(),
                                        extra_files={"layershear.json": dumps(self.record)})
        return self.saved_to

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
        """Upload the pruned checkpoint to the Hub as ``repo_id`` (the folder :meth:`save_pretrained`
        wrote, else a temporary export).

        Returns:
            The URL of the commit.

        Raises:
            HubError: no token, network failure, or the Hub refused.
        """
        from layershear.export.hub import push_to_hub

        if self.saved_to is not None and self.saved_to.is_dir():
            return push_to_hub(self.saved_to, repo_id, private=private, token=token)
        with tempfile.TemporaryDirectory(prefix="layershear-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            self.saved_to = None
            return push_to_hub(folder, repo_id, private=private, token=token)


