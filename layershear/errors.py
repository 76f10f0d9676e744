"""Exception hierarchy: every bad input raises a LayershearError subclass with a one-line message."""

from __future__ import annotations


class LayershearError(Exception):
    """Base class; the CLI prints ``error: <message>`` and exits with code 2."""


class RecipeError(LayershearError):
    """A calibration recipe, eval suite or inline task list is malformed or names an unknown task."""


class BenchmarkError(LayershearError):
    """Benchmark data is missing, unreadable or inconsistent (e.g. a gold label out of range)."""


class UnsupportedModelError(LayershearError):
    """The model's architecture has no known decoder-block layout, or shares state across blocks."""


class ScoringError(LayershearError):
    """Relevance cannot be computed, e.g. the full model is not above random on the calibration set."""


class ExportError(LayershearError):
    """An output cannot be written: a pruned checkpoint (target exists or may not be replaced, locked by
    another run, inconsistent config, incomplete tensors), a report, a JSON file, or a full disk."""


class HubError(LayershearError):
    """Pushing to the Hugging Face Hub failed (no token, no network, repo refused)."""


class CheckpointError(LayershearError):
    """A checkpoint folder is unreadable, incomplete or unsafe: truncated shard, malformed or incomplete
    index, NaN/Inf weights, pickle-only weights, missing tokenizer, or code it asks to run."""


class JournalError(LayershearError):
    """A run's journal cannot be resumed: it was written with other settings, or it is unreadable."""
