"""``layershear push``: upload an exported folder — :func:`layershear.export.hub.push_to_hub`."""

from __future__ import annotations

from pathlib import Path

import click

from layershear.cli.options import Command


@click.command(cls=Command, name="push")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo as private.")
def command(folder, repo_id, private) -> None:
    """Upload an exported FOLDER to the Hugging Face Hub as REPO_ID."""
    from layershear.cli.render import ERR
    from layershear.export.hub import push_to_hub

    ERR.print(f"pushed: {push_to_hub(folder, repo_id, private=private)}", markup=False)
