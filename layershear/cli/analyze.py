"""``layershear analyze``: every block metric, how they agree, pruning curves — :func:`layershear.pipeline.analyze.analyze_model`."""

from __future__ import annotations

from pathlib import Path

import click

from layershear.cli.options import Command, calib_options, command_line, data_of, data_options, model_options


@click.command(cls=Command, name="analyze")
@click.argument("model")
@calib_options
@click.option("--tasks", "tasks_spec", required=True,
              help="Held-out documents for the per-task accuracy drops and pruning curves: suite name, YAML, or task[:limit],...")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Report folder (report.html, report.json, PNGs).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder (only once the new report is complete).")
@click.option("--max-remove", type=click.IntRange(min=1), default=None,
              help="Blocks removed at the end of each pruning curve (default: a quarter of the blocks).")
@data_options
@model_options
def command(model, calib_spec, acc_norm, engine, tasks_spec, out, overwrite, max_remove, source, data_dir, batch_size,
            max_length, num_fewshot, add_bos, dtype, device, revision, trust_remote_code) -> None:
    """Every block metric on MODEL, how they agree (correlations, rank confusion, task dependence), pruning curves."""
    from layershear.analysis.report import write_analysis
    from layershear.cli.render import ERR, OUT, analysis_table, reporting
    from layershear.engine.distributed import is_main
    from layershear.export.atomic import atomic_folder, check_target
    from layershear.pipeline.analyze import analyze_model

    check_target(out, overwrite, sources=[model] if Path(model).is_dir() else [])
    with reporting() as on_event:
        run = analyze_model(model, calib=calib_spec, tasks=tasks_spec, max_remove=max_remove, acc_norm=acc_norm,
                            engine=engine, batch_size=batch_size, max_length=max_length, add_bos=add_bos, dtype=dtype,
                            device=device, revision=revision, trust_remote_code=trust_remote_code,
                            data=data_of(source, data_dir, num_fewshot), command=command_line(),
                            on_event=on_event)
    if not is_main():
        return
    with atomic_folder(out) as tmp:
        write_analysis(run.analysis, tmp, record=run.record, title=run.title)
    OUT.print(analysis_table(run.analysis))
    ERR.print(f"wrote {out}/report.html, report.json and the figures", markup=False)
