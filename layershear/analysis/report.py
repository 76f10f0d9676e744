"""The files of `layershear analyze`: report.json, PNG figures and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layershear.analysis.analyze import Analysis
from layershear.analysis.html import write_report
from layershear.analysis.plots import confusion_matrix, heatmap_drop, pruning_curves, scatter_cosine_vs_drop
from layershear.analysis.statistics import rank_confusion
from layershear.export.record import dumps

FIGURES = {
    "accuracy_drop_heatmap.png": "Accuracy drop (points) when each block alone is removed, per task (eval documents)",
    "cosine_vs_drop.png": "Cosine score (ShortGPT Block Influence) vs accuracy drop, one point per block",
    "rank_confusion.png": "i-th least important block by accuracy relevance vs its rank by cosine score",
    "pruning_curves.png": "Eval accuracy vs blocks removed, one line per metric's removal order",
}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def write_analysis(a: Analysis, out_dir: Path, *, record: dict[str, Any], title: str) -> list[Path]:
    """Write report.json (``record`` plus every number of ``a``), the figures and report.html into ``out_dir``.

    Returns:
        The paths written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    pooled = a.correlations["cosine_vs_drop_pooled"]
    paths = [
        heatmap_drop(a.drop_by_task, out_dir / "accuracy_drop_heatmap.png"),
        scatter_cosine_vs_drop(a.scores["cosine"], a.drop, out_dir / "cosine_vs_drop.png",
                               r=a.correlations["metric_vs_drop"]["cosine"]["pearson_r"]),
        confusion_matrix(rank_confusion(a.scores["accuracy"], a.scores["cosine"]), out_dir / "rank_confusion.png",
                         xlabel="rank by cosine score", ylabel="rank by accuracy relevance"),
        pruning_curves(a.curves, out_dir / "pruning_curves.png", random=a.eval_random),   # fractions; plotted in %
    ]
    (out_dir / "report.json").write_text(dumps({**record, "analysis": a.to_dict()}))
    paths.append(out_dir / "report.json")
    summary = {
        "Pearson R, cosine vs accuracy drop (pooled over blocks x tasks)": _num(pooled["pearson_r"]),
        "Spearman rho, pooled": _num(pooled["spearman_rho"]),
        "misjudgment rate (cosine vs accuracy ranks)": _pct(a.misjudgment["rate"]),
        f"major-misjudgment rate (ranks {a.misjudgment['major_threshold']}+ apart)": _pct(a.misjudgment["major_rate"]),
        "Wilcoxon p (accuracy drop varies more across tasks than cosine)": _num(a.task_dependence["p_value"], ".3g"),
    }
    tables = [
        ("Per-block metrics (higher = more important; accuracy drop in points on the eval documents)",
         ["block", *a.scores, "drop (all)", *(f"drop {t}" for t in a.tasks)],
         [[str(b), *(_num(a.scores[m].get(b)) for m in a.scores), _pct(a.drop[b]),
           *(_pct(a.drop_by_task[t][b]) for t in a.tasks)] for b in range(a.num_blocks)]),
        ("Cosine score vs accuracy drop, per task", ["task", "Pearson R", "p", "Spearman rho", "p"],
         [[t, _num(c["pearson_r"]), _num(c["pearson_p"], ".3g"), _num(c["spearman_rho"]), _num(c["spearman_p"], ".3g")]
          for t, c in a.correlations["cosine_vs_drop_by_task"].items()]),
        ("Pruning curves: eval accuracy (%) after removing k blocks", ["metric", *(str(k) for k, _ in a.curves["accuracy"])],
         [[m, *(_pct(acc) for _, acc in c)] for m, c in a.curves.items()]),
        ("Removal orders", ["metric", "blocks removed, in order"], [[m, ", ".join(map(str, o))] for m, o in a.orders.items()]),
    ]
    html = write_report(out_dir, title=title, summary=summary, tables=tables, images=[(caption, name) for name, caption in FIGURES.items()])
    return [*paths, html]
