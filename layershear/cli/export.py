"""``layershear export``: MODEL without the given blocks, streamed from its shards — :class:`layershear.Exporter`."""

from __future__ import annotations

from pathlib import Path

import click

from layershear.cli.options import Command, command_line, parse_blocks


@click.command(cls=Command, name="export")
@click.argument("model")
@click.option("--remove", "remove_text", required=True, help="Blocks to remove, e.g. 3,7 (original 0-based indices).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the pruned HF model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder (only once the new one is complete).")
@click.option("--max-shard-size", default="5GB", show_default=True, help="Largest safetensors shard.")
@click.option("--revision", default=None, help="Hub revision of MODEL.")
@click.option("--trust-remote-code", is_flag=True,
              help="Allow a checkpoint whose config.json runs its own code (auto_map); refused without this flag.")
def command(model, remove_text, out, overwrite, max_shard_size, revision, trust_remote_code) -> None:
    """Write MODEL without the given blocks as a new HF folder (streams the shards; loads no model)."""
    from layershear import __version__
    from layershear.cli.render import ERR
    from layershear.export.atomic import check_target
    from layershear.export.card import RemovedBlock, render_model_card
    from layershear.export.exporter import Exporter, parse_size
    from layershear.export.record import dumps, run_record

    removed = parse_blocks(remove_text)
    check_target(out, overwrite, sources=[model] if Path(model).is_dir() else [])
    exporter = Exporter(model, revision=revision, max_shard_bytes=parse_size(max_shard_size),
                        trust_remote_code=trust_remote_code)
    record = run_record(command=command_line(), settings={"removed": removed}, model={"source": model}, removed=removed)
    card = render_model_card(base_model=model, num_blocks=exporter.num_blocks, removed=[RemovedBlock(b, None, None) for b in removed],
                             calibration=None, command=record["command"], version=__version__, metric=None)
    exporter.export(removed, out, overwrite=overwrite, card=card, extra_files={"layershear.json": dumps(record)})
    ERR.print(f"wrote {out}", markup=False)
