"""Multiple-choice benchmarks in lm-evaluation-harness's exact 0-shot prompt format.

Example:
    >>> from layershear.data.benchmarks import load_split, random_accuracy
    >>> items = load_split("arc_challenge", "test")      # local copy if present, else the Hub
    >>> round(random_accuracy(items), 4)
    0.2502
"""

from __future__ import annotations

from layershear.data.benchmarks.base import TARGET_DELIMITER, MCItem, TaskSpec, random_accuracy, split_whitespace
from layershear.data.benchmarks.local import DATA_ENV, find_data_dir
from layershear.data.benchmarks.registry import TASKS, get_task, load_path, load_split, local_splits

__all__ = [
    "DATA_ENV",
    "TARGET_DELIMITER",
    "TASKS",
    "MCItem",
    "TaskSpec",
    "find_data_dir",
    "get_task",
    "load_path",
    "load_split",
    "local_splits",
    "random_accuracy",
    "split_whitespace",
]
