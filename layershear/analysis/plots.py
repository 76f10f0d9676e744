"""PNG figures for the relevance analysis: per-task accuracy-drop heatmap, cosine-vs-drop scatter, rank confusion, pruning curves.

Every function writes one PNG (dpi 150, tight bounding box), closes its figure and returns the path.
Matplotlib runs on the non-interactive "Agg" backend, so no window is ever opened.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after matplotlib.use, so pyplot never picks an interactive backend
import numpy as np
from matplotlib.figure import Figure

from layershear.errors import LayershearError

DPI = 150


@contextmanager
def _figure(path: str | Path, *, figsize: tuple[float, float]) -> Iterator[Figure]:
    """Yield a new figure; save it to ``path`` when the body succeeds, close it in every case."""
    fig = plt.figure(figsize=figsize)
    try:
        yield fig
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=DPI, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)


def heatmap_drop(drop_by_task: Mapping[str, Mapping[int, float]], path: str | Path) -> Path:
    """Heatmap of the accuracy drop per task (rows, in the given order) and block (columns, ascending index).

    Args:
        drop_by_task: ``{task: {block_idx: accuracy drop as a fraction}}``; plotted in points (x100).
            A block missing from a task is left blank.
        path: PNG file to write; parent folders are created.

    Returns:
        ``Path(path)``.

    Raises:
        LayershearError: no task has any block.
    """
    tasks = list(drop_by_task)
    blocks = sorted({b for per_block in drop_by_task.values() for b in per_block})
    if not tasks or not blocks:
        raise LayershearError("heatmap_drop needs at least one task with one block; pass {task: {block_idx: drop}}")
    grid = np.full((len(tasks), len(blocks)), np.nan)
    for i, t in enumerate(tasks):
        for j, b in enumerate(blocks):
            if b in drop_by_task[t]:
                grid[i, j] = 100.0 * drop_by_task[t][b]
    finite = grid[np.isfinite(grid)]
    vmax = float(np.abs(finite).max()) if finite.size else 0.0
    vmax = vmax if vmax > 0 else 1.0  # symmetric limits centre the diverging map at 0
    with _figure(path, figsize=(max(6.0, 0.35 * len(blocks) + 2.0), max(2.5, 0.45 * len(tasks) + 1.5))) as fig:
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
        ax.set_yticks(range(len(tasks)), tasks)
        ax.set_xlabel("block removed")
        ax.set_title("Accuracy drop when one block is removed")
        fig.colorbar(im, ax=ax, label="accuracy drop (points)")
    return Path(path)


def scatter_cosine_vs_drop(cosine: Mapping[int, float], drop: Mapping[int, float], path: str | Path, *, r: float | None = None) -> Path:
    """Scatter of cosine score (x) against accuracy drop in points (y), one point per common block, labelled by index.

    Args:
        cosine: ``{block_idx: cosine Block Influence}`` (higher = more important).
        drop: ``{block_idx: accuracy drop as a fraction}``; plotted in points (x100).
        path: PNG file to write.
        r: Pearson R to show in the title, if given.

    Returns:
        ``Path(path)``.
    """
    blocks = sorted(set(cosine) & set(drop))
    xs = [cosine[b] for b in blocks]
    ys = [100.0 * drop[b] for b in blocks]
    with _figure(path, figsize=(6.0, 4.5)) as fig:
        ax = fig.add_subplot()
        ax.scatter(xs, ys, s=18, color="tab:blue")
        for b, x, y in zip(blocks, xs, ys):
            ax.annotate(str(b), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.set_xlabel("cosine score (higher = more important)")
        ax.set_ylabel("accuracy drop (points)")
        title = "Cosine score vs accuracy drop"
        if r is not None:
            title += f" (Pearson R = {r:.2f})" if math.isfinite(r) else " (Pearson R undefined)"
        ax.set_title(title)
    return Path(path)


def confusion_matrix(conf: np.ndarray, path: str | Path, *, xlabel: str = "rank by cosine", ylabel: str = "rank by accuracy drop") -> Path:
    """Rank-confusion matrix (see :func:`layershear.analysis.statistics.rank_confusion`); rank 0 = least important.

    Args:
        conf: 2-D array ``[n, m]`` of counts (a 0/1 permutation matrix for ranks).
        path: PNG file to write.
        xlabel: column axis label.
        ylabel: row axis label.

    Returns:
        ``Path(path)``.

    Raises:
        LayershearError: ``conf`` is not a non-empty 2-D array.
    """
    arr = np.asarray(conf)
    if arr.ndim != 2 or arr.size == 0:
        raise LayershearError(f"confusion_matrix needs a non-empty 2-D array, got shape {arr.shape}; pass rank_confusion(...)")
    side = max(4.0, 0.22 * max(arr.shape) + 2.0)
    with _figure(path, figsize=(side + 1.0, side)) as fig:
        ax = fig.add_subplot()
        im = ax.imshow(arr, cmap="Blues", vmin=0, aspect="equal", interpolation="nearest")
        ax.plot([-0.5, arr.shape[1] - 0.5], [-0.5, arr.shape[0] - 0.5], color="grey", linewidth=0.6, linestyle=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title("Rank confusion (0 = least important)")
        fig.colorbar(im, ax=ax, label="blocks")
    return Path(path)


def pruning_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, *, random: float | None = None) -> Path:
    """Accuracy vs number of blocks removed, one line with markers per metric.

    Args:
        curves: ``{metric: [(blocks_removed, accuracy as a fraction), ...]}``; plotted in percent (x100),
            points sorted by blocks removed.
        path: PNG file to write.
        random: chance accuracy as a fraction; drawn as a dashed horizontal line when given.

    Returns:
        ``Path(path)``.
    """
    with _figure(path, figsize=(6.5, 4.5)) as fig:
        ax = fig.add_subplot()
        for metric, points in curves.items():
            pts = sorted(points)
            ax.plot([k for k, _ in pts], [100.0 * a for _, a in pts], marker="o", markersize=4, label=metric)
        if random is not None:
            ax.axhline(100.0 * random, color="grey", linestyle="--", linewidth=1.0, label="random")
        ax.set_xlabel("blocks removed")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy after pruning")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if curves or random is not None:
            ax.legend()
    return Path(path)
