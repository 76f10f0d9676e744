"""Write a folder atomically: build it in a temp folder beside the target, then rename it into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from layershear.errors import ExportError


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty folder unless ``overwrite``.

    Raises:
        ExportError: with the fix in the message.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"Output {str(out)!r} is a file; choose a folder for --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"Output folder {str(out)!r} exists; pass --overwrite to replace it or choose another --out")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside ``out``; when the body succeeds it replaces ``out``.

    An existing ``out`` is removed only after the new folder has been renamed into place; when the
    body raises, the temp folder is deleted and ``out`` is left as it was. The folder gets the
    usual permissions (0777 minus the umask), not ``mkdtemp``'s private 0700.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / out.name, out)
        raise
    finally:
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
