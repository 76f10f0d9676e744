"""``layershear score``: the relevance table of every block — :func:`layershear.pipeline.score.score_model`."""

from __future__ import annotations

import click

from layershear.cli.options import (
    Command,
    calib_options,
    check_json_path,
    command_line,
    data_of,
    data_options,
    model_options,
    parse_blocks,
    write_json,
)


@click.command(cls=Command, name="score")
@click.argument("model")
@calib_options
@click.option("--remove", "remove_text", default=None, help="Score the model with these blocks already removed, e.g. 3,7.")
@click.option("--json", "json_path", default=None, help="Write the relevance table as JSON to this file ('-' = stdout).")
@data_options
@model_options
def command(model, calib_spec, acc_norm, engine, remove_text, json_path, source, data_dir, batch_size, max_length, num_fewshot,
            add_bos, dtype, device, revision, trust_remote_code) -> None:
    """Relevance of every block of MODEL on a calibration set (one greedy step, nothing removed)."""
    from layershear.cli.render import OUT, relevance_table, reporting
    from layershear.pipeline.score import score_model

    removed = parse_blocks(remove_text) if remove_text else []
    check_json_path(json_path)
    with reporting() as on_event:
        run = score_model(model, calib=calib_spec, removed=removed, acc_norm=acc_norm, engine=engine,
                          batch_size=batch_size, max_length=max_length, add_bos=add_bos, dtype=dtype, device=device,
                          revision=revision, trust_remote_code=trust_remote_code, data=data_of(source, data_dir, num_fewshot),
                          command=command_line(), on_event=on_event)
    if json_path != "-":
        OUT.print(relevance_table(run.scores, run.parent,
                                  title=f"Block relevance of {model}" + (f" without {removed}" if removed else "")))
    if json_path:
        write_json(run.record, json_path)
