"""``layershear eval``: held-out acc / acc_norm of one or more models — :func:`layershear.pipeline.evaluate.evaluate_model`."""

from __future__ import annotations

from pathlib import Path

import click

from layershear.cli.options import Command, check_json_path, command_line, data_of, data_options, model_options, write_json


@click.command(cls=Command, name="eval")
@click.argument("models", nargs=-1, required=True)
@click.option("--tasks", "tasks_spec", required=True, help="Eval suite name (eval-paper, eval-demo), YAML path, or inline task[:limit],...")
@click.option("--exclude-calib", "exclude_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="layershear.json whose calibration docs are skipped (a model folder's own is used automatically).")
@click.option("--json", "json_path", default=None, help="Write the results as JSON to this file ('-' = stdout).")
@data_options
@model_options
def command(models, tasks_spec, exclude_files, json_path, source, data_dir, batch_size, max_length, num_fewshot, add_bos,
            dtype, device, revision, trust_remote_code) -> None:
    """Held-out acc / acc_norm of one or more MODELS (a column each), lm-eval style."""
    from layershear.cli.render import OUT, eval_table, reporting
    from layershear.export.record import eval_dict, run_record
    from layershear.inputs import calibration_exclusions, eval_documents
    from layershear.pipeline.evaluate import evaluate_model

    check_json_path(json_path)
    own = [Path(m) / "layershear.json" for m in models if (Path(m) / "layershear.json").is_file()]
    exclude = calibration_exclusions([*exclude_files, *own])
    suite, tasks = eval_documents(tasks_spec, data_of(source, data_dir, num_fewshot), exclude=exclude)
    columns = {}
    with reporting() as on_event:
        for name in models:
            columns[name] = evaluate_model(name, tasks=tasks, name=Path(name).name, batch_size=batch_size,
                                           max_length=max_length, add_bos=add_bos, dtype=dtype, device=device,
                                           revision=revision, trust_remote_code=trust_remote_code, on_event=on_event)
    if json_path != "-":
        labels = {name: Path(name).name or name for name in columns}
        if len(set(labels.values())) < len(labels):
            labels = {name: name for name in columns}
        OUT.print(eval_table({labels[n]: r for n, r in columns.items()}, title=f"Held-out evaluation ({suite})"))
    if json_path:
        write_json(run_record(command=command_line(), settings={"tasks": tasks_spec},
                              excluded={f"{t}/{s}": len(ids) for (t, s), ids in exclude.items()},
                              results={m: eval_dict(r) for m, r in columns.items()}), json_path)
