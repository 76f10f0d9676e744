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
    """A pruned checkpoint cannot be written (target exists, inconsistent config, bad shard)."""


class HubError(LayershearError):
    """Pushing to the Hugging Face Hub failed (no token, no network, repo refused)."""
