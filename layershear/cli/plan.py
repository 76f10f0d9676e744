"""``layershear plan``: what a prune will cost before it starts — :func:`layershear.pipeline.plan.plan_job`."""

from __future__ import annotations

import click

from layershear.cli.options import Command, calib_options, check_json_path, data_of, data_options, model_options
from layershear.cli.prune import PLACEMENTS, SEARCHES


@click.command(cls=Command, name="plan")
@click.argument("model")
@click.option("--ratio", type=float, default=None, help="Fraction of blocks to remove, in (0, 1); rounded half up.")
@click.option("--num-remove", type=int, default=None, help="Number of blocks to remove (instead of --ratio).")
@calib_options
@click.option("--search", type=click.Choice(SEARCHES), default="greedy", show_default=True,
              help="The search to plan (astar and evolve are planned as greedy: the rest is their --search-budget).")
@click.option("--beam", "beam_width", type=click.IntRange(min=1), default=1, show_default=True, help="Beam width.")
@click.option("--probe-batches", type=click.IntRange(min=1), default=2, show_default=True,
              help="Calibration batches of the timed probe.")
@click.option("--placement", type=click.Choice(PLACEMENTS), default="auto", show_default=True,
              help="Where the weights live (as prune --placement).")
@click.option("--gpus", "devices", type=click.IntRange(min=1), default=1, show_default=True,
              help="Plan the job for this many devices like this one (torchrun processes).")
@click.option("--json", "json_path", default=None, help="Write the plan as JSON to this file ('-' = stdout).")
@data_options
@model_options
def command(model, ratio, num_remove, calib_spec, acc_norm, engine, search, beam_width, probe_batches, placement, devices,
            json_path, source,
            data_dir, batch_size, max_length, num_fewshot, add_bos, dtype, device, revision, trust_remote_code) -> None:
    """Memory plan, forward work and an estimated time of a prune of MODEL, from a short measured probe."""
    from layershear.cli.options import write_json
    from layershear.cli.render import OUT, plan_table, reporting
    from layershear.pipeline.plan import plan_job

    check_json_path(json_path)
    with reporting() as on_event:
        plan = plan_job(model, calib=calib_spec, ratio=ratio, num_remove=num_remove, search=search,
                        beam_width=beam_width, batch_size=batch_size, max_length=max_length, add_bos=add_bos,
                        dtype=dtype, device=device, revision=revision, trust_remote_code=trust_remote_code,
                        data=data_of(source, data_dir, num_fewshot), probe_batches=probe_batches, placement=placement,
                        devices=devices, on_event=on_event)
    if json_path != "-":
        OUT.print(plan_table(plan))
    if json_path:
        write_json(plan.to_dict(), json_path)
