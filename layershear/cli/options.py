"""Options shared by several commands, and small parsers; imports only click (``--help`` stays instant)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import click

from layershear.errors import LayershearError

ENGINES = ("fast", "reference")      # layershear.engine.config.ENGINES, named here so --help needs no torch


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and ``docker stop`` send), raised like Ctrl-C's KeyboardInterrupt so that
    the same clean-up runs: the current pass is dropped, temp folders are removed, the journal kept."""

    exit_code = 143


#: signals received by this process; an exception raised while one is pending is an interruption
#: even when a C extension turned the KeyboardInterrupt into another type (safetensors' get_tensor
#: re-raises it as a ValueError)
RECEIVED: list[int] = []


def _interrupt(signum, frame) -> None:
    import signal

    RECEIVED.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


class Command(click.Command):
    """A layershear command: before it runs (not for ``--help``), turn SIGTERM into :class:`Terminated`,
    join torchrun's process group and set up logging at the group's ``-v`` level; only rank 0 prints."""

    def invoke(self, ctx: click.Context):
        import logging
        import signal

        signal.signal(signal.SIGTERM, _interrupt)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupt)

        from rich.logging import RichHandler

        from layershear.cli.render import ERR, OUT
        from layershear.engine.distributed import init_from_env, is_main

        verbose = ctx.find_root().params.get("verbose", 0)
        init_from_env()
        if not is_main():
            ERR.quiet = OUT.quiet = True
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                            handlers=[RichHandler(console=ERR, show_path=False)], force=True)
        logging.getLogger("layershear").setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
        if verbose < 2:
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
        return super().invoke(ctx)


def model_options(f):
    f = click.option("--dtype", default="auto", show_default=True, help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16.")(f)
    f = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")(f)
    f = click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of MODEL.")(f)
    f = click.option("--trust-remote-code", is_flag=True,
                     help="Run the checkpoint's own Python files (config.json auto_map); refused without this flag.")(f)
    return f


def data_options(f):
    f = click.option("--data-source", "source", type=click.Choice(["auto", "local", "hub"]), default="auto", show_default=True,
                     help="Benchmark data: local copies (LAYERSHEAR_DATA or ../shared/data/benchmarks) when found, else the Hub.")(f)
    f = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder of local benchmark copies (default: $LAYERSHEAR_DATA or ../shared/data/benchmarks).")(f)
    f = click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Sequences per forward pass.")(f)
    f = click.option("--max-length", type=click.IntRange(min=8), default=None,
                     help="Left-truncate inputs to this many tokens [default: the model's context length, as lm-eval].")(f)
    f = click.option("--add-bos", is_flag=True, help="Prepend BOS to every context (models that always expect it, e.g. Gemma).")(f)
    f = click.option("--num-fewshot", type=click.IntRange(min=0), default=None,
                     help="Few-shot examples per document for every task that takes them, drawn as lm-eval does "
                          "[default: the recipe's, else lm-eval's: 0, GSM8K 5].")(f)
    return f


def calib_options(f):
    f = click.option("--calib", "calib_spec", required=True,
                     help="Calibration recipe: a name (mix10, demo), a YAML path, or inline task:amount,... (0.1 = fraction, 50 = docs).")(f)
    f = click.option("--acc-norm/--no-acc-norm", "acc_norm", default=None,
                     help="Score every task by acc_norm (length-normalised) or by acc [default: lm-eval's choice per task: "
                          "acc_norm where its task reports it].")(f)
    f = click.option("--engine", type=click.Choice(ENGINES), default="fast", show_default=True,
                     help="fast: the same answers from less work (shared prefixes, cached block inputs, step reuse, "
                          "stacked candidates, fused kernels); reference: lm-eval's computation, a full forward per candidate.")(f)
    return f


def data_of(source: str, data_dir: Path | None, num_fewshot: int | None = None):
    """The :class:`layershear.inputs.DataSource` of ``--data-source``, ``--data-dir`` and ``--num-fewshot``."""
    from layershear.inputs import DataSource

    return DataSource(source, data_dir, num_fewshot)


def parse_blocks(text: str, flag: str = "--remove") -> list[int]:
    """``"3,7"`` -> ``[3, 7]``: sorted, deduplicated 0-based block indices in ASCII digits (empty items
    are skipped); raises LayershearError naming ``flag`` on anything else, negative indices included."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise LayershearError(f"{flag} needs at least one block index, e.g. {flag} 3,7")
    if any(re.fullmatch(r"-\s*[0-9]+", x) for x in items):
        raise LayershearError(f"{flag} takes 0-based block indices, none negative (the first block is 0); got {text!r}")
    # at most 640 digits: int() refuses longer numbers where sys.set_int_max_str_digits lowered the limit
    if not all(re.fullmatch(r"[0-9]{1,640}", x) for x in items):
        raise LayershearError(f"{flag} takes comma-separated block indices like 3,7; got {text!r}")
    return sorted({int(x) for x in items})


def command_line() -> str:
    """The command line as typed, for ``layershear.json`` and the model card."""
    return "layershear " + shlex.join(sys.argv[1:]) if sys.argv and Path(sys.argv[0]).name == "layershear" \
        else shlex.join(["layershear", *sys.argv[1:]])


def check_json_path(path: str | None) -> None:
    """Refuse a ``--json`` path that cannot be written, before any work (the write itself is atomic)."""
    if not path or path == "-":
        return
    target = Path(path)
    parent = next((p for p in target.parents if p.exists()), Path("."))
    if target.is_dir():
        what = "is a folder"
    elif not parent.is_dir():
        what = f"{str(parent)!r} is a file"
    elif not target.parent.is_dir():
        what = f"folder {str(target.parent)!r} does not exist"
    elif not os.access(target.parent, os.W_OK):
        what = f"folder {str(target.parent)!r} is not writable"
    else:
        return
    raise LayershearError(f"--json {path}: {what}; give a writable file path or '-' for stdout")


def write_json(record: dict, path: str) -> None:
    """``record`` as strict JSON to ``path`` ('-' = stdout); only rank 0 writes under torchrun."""
    from layershear.cli.render import ERR
    from layershear.engine.distributed import is_main
    from layershear.export.atomic import write_text_atomic
    from layershear.export.record import dumps

    if not is_main():
        return
    if path == "-":
        click.echo(dumps(record), nl=False)
    else:
        write_text_atomic(path, dumps(record))
        ERR.print(f"wrote {path}", markup=False)
