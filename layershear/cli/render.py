"""Rich rendering for the CLI: progress bars with ETA, plan lines and result tables. Only the CLI imports this."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from layershear.analysis.analyze import Analysis
from layershear.pipeline.run import PruneEvent
from layershear.scoring.accuracy import ModelAccuracy
from layershear.scoring.evaluation import TaskResult
from layershear.scoring.relevance import BlockScore
from layershear.search.beam import rank_key
from layershear.search.result import SearchResult

#: Progress, logs and errors go to stderr so that ``--json -`` output on stdout stays clean.
ERR = Console(stderr=True)
OUT = Console()


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("passes"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=ERR, transient=False)


@contextmanager
def reporting() -> Iterator:
    """A progress display for :class:`layershear.pipeline.run.PruneEvent`: yields ``on_event``.

    ``stage`` events reset the bar (description, total), ``progress`` events advance it, ``info``
    lines print above it and ``note`` lines print in yellow.
    """
    with progress() as bar:
        task_id = bar.add_task("starting", total=None)

        def on_event(event: PruneEvent) -> None:
            if event.kind == "stage":
                bar.reset(task_id, description=event.text, total=event.total)
            elif event.kind == "progress":
                bar.update(task_id, advance=event.count)
            elif event.kind == "note":
                bar.console.print(f"note: {event.text}", style="yellow", markup=False, soft_wrap=True)
            else:
                bar.console.print(event.text, markup=False, soft_wrap=True)
        yield on_event
        bar.update(task_id, description="done")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _rel(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def relevance_table(scores: Sequence[BlockScore], parent: ModelAccuracy, *, title: str) -> Table:
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
    table = Table(title=f"Removed {len(result.removed)} of {result.num_blocks} blocks ({result.strategy})",
                  caption=f"calibration acc: full {_pct(result.full.accuracy)}% -> pruned {_pct(result.final.accuracy)}%"
                          f" (r(D) {_pct(result.full.random)}%)")
    for col in ["step", "block", "relevance", "acc %", *tasks]:
        table.add_column(col, justify="right")
    table.add_row("0", "-", "-", _pct(result.full.accuracy), *(_pct(result.full.accuracy_by_task[t]) for t in tasks))
    for s in result.steps:
        table.add_row(str(s.step), str(s.chosen.block_idx), _rel(s.chosen.relevance), _pct(s.chosen.accuracy),
                      *(_pct(s.chosen.accuracy_by_task[t]) for t in tasks))
    for m in result.refinements:        # evolve: swaps accepted after greedy
        table.add_row(f"swap {m.generation}", f"+{','.join(map(str, m.removed))} -{','.join(map(str, m.put_back))}",
                      "-", _pct(m.after.accuracy), *(_pct(m.after.accuracy_by_task.get(t, float('nan'))) for t in tasks))
    if result.completed:                # the budget ran out: added from the last step's relevances
        table.add_row("budget", ",".join(map(str, result.completed)), "-", _pct(result.final.accuracy),
                      *(_pct(result.final.accuracy_by_task.get(t, float('nan'))) for t in tasks))
    return table


def plan_table(plan) -> Table:
    """A :class:`layershear.pipeline.plan.JobPlan` as a two-column table (sizes in GiB, work in block-tokens)."""
    gib = 2 ** 30
    table = Table(title=f"Plan: remove {plan.num_remove} of {plan.num_blocks} blocks of {plan.source} ({plan.search}"
                        + (f", width {plan.width}" if plan.width > 1 else "") + ")")
    table.add_column("", justify="left")
    table.add_column("", justify="left")
    rows = [
        ("device, dtype", f"{plan.device}, {plan.dtype}"),
        ("placement", f"{plan.placement} ({plan.placement_reason})"
                      + (f"; on {plan.devices} devices like this one: {plan.placement_on_devices}" if plan.devices > 1 else "")),
        ("weights", f"{plan.weights_bytes / gib:.2f} GiB ({plan.block_weights_bytes / gib:.3f} GiB per block)"),
        ("free after loading", f"device {plan.free_device_bytes / gib:.1f} GiB, host {plan.free_host_bytes / gib:.1f} GiB"),
        ("block-input cache", plan.cache),
        ("calibration", f"{plan.calibration_docs} documents, {plan.requests} requests, {plan.batches} batches, "
                        f"{plan.padded_tokens_per_pass:,} padded tokens per pass"),
        ("models the search scores", f"{plan.models:,} at most"),
        ("block-tokens", f"fast engine <= {plan.fast_block_tokens:.3g}; reference (lm-eval) {plan.reference_block_tokens:.3g}; "
                         f"streamed {plan.streamed_block_tokens:.3g} ({plan.streamed_block_loads:,} block loads)"),
        ("probe", f"{plan.probe_batches} batches, {plan.probe_block_tokens:,} block-tokens in {plan.probe_seconds:.3f} s"
                  + (f"; {1e3 * plan.probe_fetch_seconds_per_block:.1f} ms to fetch a block"
                     if plan.probe_fetch_seconds_per_block is not None else "")),
        ("estimated time", f"fast engine <= {_duration(plan.estimated_seconds_fast)}; reference "
                           f"{_duration(plan.estimated_seconds_reference)} on one device (work / the probe's rate: an estimate)"),
        (f"estimated time, {plan.devices} device{'s' if plan.devices > 1 else ''}",
         "; ".join(f"{name} {_duration(s)}" for name, s in plan.estimates.items())
         + f" (chosen: {plan.placement_on_devices})"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def eval_table(columns: dict[str, Sequence[TaskResult]], *, title: str = "Held-out evaluation") -> Table:
    """Rows task x measure, one column per model (value ± stderr, in %), plus n docs and random."""
    table = Table(title=title)
    for col in ["task", "measure", "n", "random", *columns]:
        table.add_column(col, justify="left" if col in ("task", "measure") else "right")
    first = next(iter(columns.values()))
    averages: dict[str, list[float]] = {name: [] for name in columns}
    for k, ref in enumerate(first):
        for measure in ref.values:
            cells = [f"{_pct(res[k].values[measure])} ± {_pct(res[k].stderrs[measure])}" for res in columns.values()]
            table.add_row(ref.task, measure, str(ref.num_docs), _pct(ref.random), *cells)
        # generative tasks (gsm8k) report exact_match,strict-match first: it enters the average
        main = next((m for m in ("acc_norm", "acc") if m in ref.values), next(iter(ref.values)))
        for name, results in columns.items():
            averages[name].append(results[k].values[main])
    if len(first) > 1:
        table.add_row("average", "acc_norm|acc", "", "",
                      *(_pct(sum(v) / len(v)) for v in averages.values()), style="bold")
    return table


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def analysis_table(a: Analysis) -> Table:
    """One screen for the terminal: the comparisons and the end of every pruning curve."""
    table = Table(title="layershear analyze")
    table.add_column("what")
    table.add_column("value", justify="right")
    pooled = a.correlations["cosine_vs_drop_pooled"]
    table.add_row("Pearson R cosine vs accuracy drop (pooled)", _num(pooled["pearson_r"]))
    for t, c in a.correlations["cosine_vs_drop_by_task"].items():
        table.add_row(f"  {t}", _num(c["pearson_r"]))
    table.add_row("misjudgment / major-misjudgment rate", f"{_pct(a.misjudgment['rate'])}% / {_pct(a.misjudgment['major_rate'])}%")
    td = a.task_dependence
    table.add_row("task variance of z-scored drop vs cosine (mean)",
                  f"{_num(td['mean_accuracy_variance'])} vs {_num(td['mean_cosine_variance'])}")
    table.add_row("Wilcoxon p (drop varies more)", _num(td["p_value"], ".3g"))
    for m, c in a.curves.items():
        table.add_row(f"eval acc after {c[-1][0]} removed by {m}", f"{_pct(c[-1][1])}%")
    return table
