"""Rich rendering for the CLI: progress bars with ETA and result tables. Only the CLI imports this."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from layershear.scoring.evaluation import TaskResult
from layershear.scoring.relevance import BlockScore, Evaluation
from layershear.search.beam import rank_key
from layershear.search.result import SearchResult

#: Progress, logs and errors go to stderr so that ``--json -`` output on stdout stays clean.
ERR = Console(stderr=True)
OUT = Console()


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("passes"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=ERR, transient=False)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _rel(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def relevance_table(scores: Sequence[BlockScore], parent: Evaluation, *, title: str) -> Table:
    """One row per block: relevance, accuracy without it, per-task accuracy without it (in %)."""
    tasks = list(parent.accuracy_by_task)
    table = Table(title=title, caption=f"full model: acc {_pct(parent.accuracy)}%, r(D) {_pct(parent.random)}%")
    for col in ["block", "relevance", "acc %", *tasks]:
        table.add_column(col, justify="right")
    least = min(scores, key=rank_key) if scores else None
    for s in scores:
        style = "bold green" if s is least else None
        table.add_row(str(s.block_idx), _rel(s.relevance), _pct(s.accuracy),
                      *(_pct(s.accuracy_by_task[t]) for t in tasks), style=style)
    return table


def steps_table(result: SearchResult) -> Table:
    """Removal order: step, original block index, its relevance when removed, accuracy after removal."""
    tasks = list(result.full.accuracy_by_task)
    table = Table(title=f"Removed {len(result.removed)} of {result.num_blocks} blocks "
                        f"({'greedy' if result.beam_width == 1 else f'beam width {result.beam_width}'})",
                  caption=f"calibration acc: full {_pct(result.full.accuracy)}% -> pruned {_pct(result.final.accuracy)}%"
                          f" (r(D) {_pct(result.full.random)}%)")
    for col in ["step", "block", "relevance", "acc %", *tasks]:
        table.add_column(col, justify="right")
    table.add_row("0", "-", "-", _pct(result.full.accuracy), *(_pct(result.full.accuracy_by_task[t]) for t in tasks))
    for s in result.steps:
        table.add_row(str(s.step), str(s.chosen.block_idx), _rel(s.chosen.relevance), _pct(s.chosen.accuracy),
                      *(_pct(s.chosen.accuracy_by_task[t]) for t in tasks))
    return table


def eval_table(columns: dict[str, Sequence[TaskResult]], *, title: str = "Held-out evaluation") -> Table:
    """Rows task x metric, one column per model (value ± stderr, in %), plus n docs and random."""
    table = Table(title=title)
    for col in ["task", "metric", "n", "random", *columns]:
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    first = next(iter(columns.values()))
    averages: dict[str, list[float]] = {name: [] for name in columns}
    for k, ref in enumerate(first):
        for metric in ref.values:
            cells = [f"{_pct(res[k].values[metric])} ± {_pct(res[k].stderrs[metric])}" for res in columns.values()]
            table.add_row(ref.task, metric, str(ref.num_docs), _pct(ref.random), *cells)
        main = "acc_norm" if "acc_norm" in ref.values else "acc"
        for name, results in columns.items():
            averages[name].append(results[k].values[main])
    if len(first) > 1:
        table.add_row("average", "acc_norm|acc", "", "",
                      *(_pct(sum(v) / len(v)) for v in averages.values()), style="bold")
    return table
