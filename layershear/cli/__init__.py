"""`layershear` command line: prune, score, export, eval, analyze, convert-gguf, push.

Each command is a small module over one library call; this package imports only click, so
``layershear --help`` answers without loading torch or transformers.
"""

from __future__ import annotations

import click

from layershear import __version__
from layershear.cli import analyze, convert, eval, export, plan, prune, push, score
from layershear.errors import LayershearError


class _Group(click.Group):
    """Turns a LayershearError into one red ``error: ...`` line and exit code 2, and an interruption
    (Ctrl-C, SIGTERM) into one line and exit code 130 / 143 (128 + the signal), after clean-up."""

    def invoke(self, ctx: click.Context):
        from layershear.cli.options import RECEIVED

        RECEIVED.clear()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            _interrupted(ctx, getattr(e, "exit_code", 130))
        except Exception as e:
            if RECEIVED:        # the interruption, re-raised as another type (by C code, or a broad except)
                _interrupted(ctx, 128 + RECEIVED[0])
            if not isinstance(e, LayershearError):
                raise
            from layershear.cli.render import ERR

            ERR.print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
            ctx.exit(2)


def _interrupted(ctx: click.Context, code: int) -> None:
    from layershear.cli.render import ERR

    ERR.print(f"interrupted ({'SIGTERM' if code == 143 else 'SIGINT'}); nothing half-written was left",
              style="yellow", markup=False, highlight=False)
    ctx.exit(code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="layershear")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: transformers' too).")
def cli(verbose: int) -> None:
    """Remove whole decoder blocks from an LLM by accuracy-based relevance and export a Hugging Face model.

    Under torchrun (WORLD_SIZE > 1) the processes split the calibration batches; only rank 0 prints
    and writes. Logging is set up by each command as it starts (:class:`layershear.cli.options.Command`).
    """


for _module in (prune, plan, score, export, eval, analyze, convert, push):
    cli.add_command(_module.command)


def main() -> None:
    cli(prog_name="layershear")


if __name__ == "__main__":
    main()
