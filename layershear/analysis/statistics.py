"""Compare accuracy-based block relevance with baseline importance scores (e.g. ShortGPT's cosine Block Influence).

Pure functions over ``{block_idx: score}`` mappings (original block indices). Convention everywhere: a HIGHER
score means a MORE important block; the accuracy drop of block ``b`` is ``Acc(full) - Acc(without b)``.
The analyses follow "Rethinking Layer Relevance in Large Language Models Beyond Cosine Similarity"
(arXiv 2605.14075): Pearson R between cosine score and accuracy drop, a rank-confusion matrix with
misjudgment rates, and the task dependence of both scores.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from layershear.errors import LayershearError
from layershear.search.baseline import least_important_order

NAN = float("nan")


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python numbers, dict keys -> str (so a JSON round trip is lossless)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation between two per-block scores; NaN where undefined."""

    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None)."""
        return _json_safe(asdict(self))


@dataclass(frozen=True)
class Misjudgment:
    """How often a metric ranks blocks differently from the reference (see :func:`misjudgment`)."""

    rate: float
    major_rate: float
    major_threshold: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None)."""
        return _json_safe(asdict(self))


@dataclass(frozen=True)
class TaskDependence:
    """Per-block variance across tasks of z-scored accuracy drops and z-scored cosine scores (see :func:`task_dependence`)."""

    tasks: tuple[str, ...]
    accuracy_variance: dict[int, float]
    cosine_variance: dict[int, float]
    mean_accuracy_variance: float
    mean_cosine_variance: float
    statistic: float
    p_value: float
    n_blocks: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None; block keys become strings)."""
        return _json_safe(asdict(self))


def _common(x: Mapping[int, float], y: Mapping[int, float]) -> list[int]:
    return sorted(set(x) & set(y))


def correlation(x: Mapping[int, float], y: Mapping[int, float]) -> Correlation:
    """Pearson and Spearman correlation of two per-block scores over their common blocks.

    Args:
        x: ``{block_idx: score}``, e.g. cosine Block Influence.
        y: ``{block_idx: score}``, e.g. accuracy drop (fraction). Blocks in only one input are ignored,
            as are blocks where either value is NaN or infinite.

    Returns:
        Correlation with ``n`` = number of blocks used. With fewer than 3 blocks or a constant input
        every statistic is ``float('nan')``; no exception is raised and no scipy warning escapes.
        p-values are scipy's two-sided ones (t distribution with n - 2 degrees of freedom).
    """
    blocks = [b for b in _common(x, y) if math.isfinite(x[b]) and math.isfinite(y[b])]
    xs = np.array([x[b] for b in blocks], dtype=np.float64)
    ys = np.array([y[b] for b in blocks], dtype=np.float64)
    n = len(blocks)
    if n < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Correlation(NAN, NAN, NAN, NAN, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        pr, pp = stats.pearsonr(xs, ys)
        sr, sp = stats.spearmanr(xs, ys)
    return Correlation(float(pr), float(pp), float(sr), float(sp), n)


def _ranks(scores: Mapping[int, float], blocks: list[int]) -> dict[int, int]:
    """0-based rank of each block (0 = least important) among ``blocks``."""
    return {b: i for i, b in enumerate(least_important_order({b: scores[b] for b in blocks}))}


def rank_confusion(reference: Mapping[int, float], other: Mapping[int, float]) -> np.ndarray:
    """Rank-confusion matrix between a reference relevance (accuracy drop) and another metric (e.g. cosine).

    Args:
        reference: ``{block_idx: score}``, higher = more important; defines the rows.
        other: ``{block_idx: score}``, higher = more important; defines the columns.

    Returns:
        ``int64`` array of shape ``[n, n]`` over the ``n`` common blocks: ``C[i, j] = 1`` iff the block
        that is i-th least important by ``reference`` is j-th least important by ``other``. A
        permutation matrix; the identity when both orders agree. ``[0, 0]`` when no block is common.

    Raises:
        LayershearError: a score of a common block is not finite.
    """
    blocks = _common(reference, other)
    ref, oth = _ranks(reference, blocks), _ranks(other, blocks)
    conf = np.zeros((len(blocks), len(blocks)), dtype=np.int64)
    for b in blocks:
        conf[ref[b], oth[b]] = 1
    return conf


def misjudgment(reference: Mapping[int, float], other: Mapping[int, float], *, major: int | None = None) -> Misjudgment:
    """Share of blocks that ``other`` ranks differently from ``reference``.

    Definitions (ours: the paper, arXiv 2605.14075, reports a 93.8% misjudgment and a 53.6%
    major-misjudgment rate for cosine, but its exact definitions are NOT reproduced here):

    - misjudgment rate = fraction of the ``n`` common blocks whose 0-based importance rank by
      ``other`` differs from their rank by ``reference`` (the off-diagonal share of
      :func:`rank_confusion`);
    - major-misjudgment rate = fraction of blocks whose two ranks differ by at least ``major``
      positions; default ``major = ceil(n / 4)`` (a quarter of the blocks), at least 1.

    Args:
        reference: ``{block_idx: score}``, higher = more important (accuracy drop).
        other: ``{block_idx: score}``, higher = more important (e.g. cosine).
        major: rank distance that counts as a major misjudgment; ``None`` = ``ceil(n / 4)``.

    Returns:
        Misjudgment; both rates are NaN when no block is common.

    Raises:
        LayershearError: ``major`` < 1, or a score of a common block is not finite.
    """
    if major is not None and major < 1:
        raise LayershearError(f"major={major} must be >= 1 (a rank distance in positions); pass None for ceil(n / 4)")
    blocks = _common(reference, other)
    n = len(blocks)
    threshold = major if major is not None else max(1, math.ceil(n / 4))
    if n == 0:
        return Misjudgment(NAN, NAN, threshold, 0)
    ref, oth = _ranks(reference, blocks), _ranks(other, blocks)
    dist = np.array([abs(ref[b] - oth[b]) for b in blocks])
    return Misjudgment(float(np.mean(dist > 0)), float(np.mean(dist >= threshold)), threshold, n)


def _zscore(values: Mapping[int, float]) -> dict[int, float]:
    arr = np.array(list(values.values()), dtype=np.float64)
    std = float(arr.std()) if arr.size else 0.0
    if not std > 0 or not math.isfinite(std):
        return {b: 0.0 for b in values}
    mean = float(arr.mean())
    return {b: (float(v) - mean) / std for b, v in values.items()}


def zscore_by_task(values: Mapping[str, Mapping[int, float]]) -> dict[str, dict[int, float]]:
    """Z-score each task's per-block values across blocks.

    Args:
        values: ``{task: {block_idx: value}}``.

    Returns:
        ``{task: {block_idx: (value - mean) / std}}`` with the population std (ddof=0) of that task;
        a constant (or single-block) task maps to zeros.
    """
    return {task: _zscore(per_block) for task, per_block in values.items()}


def _wilcoxon_greater(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    diff = a - b
    if diff.size < 2 or not np.any(diff != 0):
        return NAN, NAN
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.wilcoxon(a, b, alternative="greater")
    except ValueError:  # scipy versions differ on all-zero or too-short differences
        return NAN, NAN
    return float(res.statistic), float(res.pvalue)


def task_dependence(drop_by_task: Mapping[str, Mapping[int, float]], cosine_by_task: Mapping[str, Mapping[int, float]]) -> TaskDependence:
    """Does the accuracy drop depend on the task more than the cosine score does?

    Both inputs are restricted to the tasks they share and to the blocks present in every one of those
    tasks in both inputs, then z-scored per task (:func:`zscore_by_task`), so tasks with different
    accuracy scales compare. For each block, the population variance across tasks of its z-scored
    accuracy drop and of its z-scored cosine score is computed. A one-sided Wilcoxon signed-rank test
    over blocks (``scipy.stats.wilcoxon(acc, cos, alternative="greater")``) tests that the accuracy
    variance exceeds the cosine variance.

    Args:
        drop_by_task: ``{task: {block_idx: accuracy drop}}``.
        cosine_by_task: ``{task: {block_idx: cosine score}}`` (any baseline metric works).

    Returns:
        TaskDependence; ``statistic`` and ``p_value`` are NaN with fewer than 2 blocks or when every
        per-block difference is zero.

    Raises:
        LayershearError: fewer than 2 tasks are common to both inputs.
    """
    tasks = tuple(t for t in drop_by_task if t in cosine_by_task)
    if len(tasks) < 2:
        raise LayershearError(
            f"task_dependence needs per-task scores for >= 2 tasks present in both inputs, got {list(tasks)}; score each block on at least two tasks"
        )
    blocks = sorted(set.intersection(*(set(drop_by_task[t]) & set(cosine_by_task[t]) for t in tasks)))
    acc_z = zscore_by_task({t: {b: drop_by_task[t][b] for b in blocks} for t in tasks})
    cos_z = zscore_by_task({t: {b: cosine_by_task[t][b] for b in blocks} for t in tasks})
    acc_var = {b: float(np.var([acc_z[t][b] for t in tasks])) for b in blocks}
    cos_var = {b: float(np.var([cos_z[t][b] for t in tasks])) for b in blocks}
    a = np.array([acc_var[b] for b in blocks])
    c = np.array([cos_var[b] for b in blocks])
    statistic, p_value = _wilcoxon_greater(a, c)
    return TaskDependence(
        tasks=tasks,
        accuracy_variance=acc_var,
        cosine_variance=cos_var,
        mean_accuracy_variance=float(a.mean()) if blocks else NAN,
        mean_cosine_variance=float(c.mean()) if blocks else NAN,
        statistic=statistic,
        p_value=p_value,
        n_blocks=len(blocks),
    )
