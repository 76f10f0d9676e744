"""Outputs that cannot destroy data: folders and files are built beside the target and renamed into
place when complete, under a lock, after checks that the target may be replaced and fits on disk.

- :func:`check_target` refuses a target that is a file, a folder that is not a model or layershear
  output (``--overwrite`` never deletes unrelated files), or one equal to, inside or above a source.
- :func:`output_lock` holds ``.NAME.lock`` beside the target (``filelock``: an OS lock, released
  when the process ends, even by SIGKILL), so two runs writing one target cannot both succeed.
- :func:`atomic_folder` writes under that lock; it and :func:`write_text_atomic` (a single file,
  whole or not at all, no lock: the last rename wins) turn a failure, a full disk included, into one
  error, remove the temp folder or file and leave the previous output as it was. Temp folders left
  by a killed run (``.NAME.tmp-*``, ``.NAME.old-*``) are swept, or restored, by the next one.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from layershear.errors import ExportError

#: files that mark a folder as a layershear output, which ``--overwrite`` may replace; a folder with
#: ``config.json`` and weights beside it (a Hugging Face model folder) may be replaced too
OUTPUT_MARKERS = ("layershear.json", "report.json")
_WEIGHTS = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth")
#: bytes kept free beyond what a write needs (file system metadata, the small files)
SPACE_MARGIN = 16 * 2**20
_HELD: dict[Path, int] = {}          # lock files this process holds -> depth (output_lock is re-entrant)


def _listing(folder: Path, limit: int = 3) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def check_target(out: Path, overwrite: bool, *, sources: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output path that would lose data.

    Args:
        out: the target folder.
        overwrite: an existing non-empty ``out`` may be replaced, but only when it is a model folder
            (``config.json`` and weights) or a layershear output (``layershear.json``, an analyze
            ``report.json``).
        sources: folders the job reads (the checkpoint): ``out`` may not be one of them, inside one,
            or contain one.

    Raises:
        ExportError: with the fix in the message.
    """
    out = Path(out)
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ExportError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
    if out.exists() and not out.is_dir():
        raise ExportError(f"Output {str(out)!r} is a file; choose a folder for --out")
    resolved = out.resolve()
    for source in sources:
        src = Path(source).resolve()
        if resolved == src or src in resolved.parents or resolved in src.parents:
            where = "is" if resolved == src else "is inside" if src in resolved.parents else "contains"
            raise ExportError(f"--out {out} {where} the source checkpoint {source}; writing it would destroy the "
                              "source: choose a folder outside it")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"Output folder {str(out)!r} exists; pass --overwrite to replace it or choose another --out")
        if not _replaceable(out):
            raise ExportError(f"--overwrite replaces only a model folder or a layershear output, and {out} holds "
                              f"other files ({_listing(out)}); choose another --out")


def _replaceable(folder: Path) -> bool:
    """A layershear output (``layershear.json``, or an analyze ``report.json`` that names layershear) or
    a model folder (``config.json`` with weight files beside it)."""
    if (folder / "layershear.json").is_file():
        return True
    report = folder / "report.json"
    if report.is_file():
        try:
            if "layershear_version" in json.loads(report.read_text(encoding="utf-8")):
                return True
        except (OSError, UnicodeDecodeError, ValueError, TypeError):
            pass
    return (folder / "config.json").is_file() and any(any(folder.glob(g)) for g in _WEIGHTS)


def _lock_file(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the lock ``.NAME.lock`` beside ``out`` for the body (re-entrant within this process).

    Raises:
        ExportError: another process holds it (another run is writing ``out``), or the folder
            beside ``out`` cannot be created or written.
    """
    from filelock import FileLock, Timeout

    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {out.parent} for {out}: {e.strerror or e}; choose another --out") from e
    path = _lock_file(out).resolve()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout as e:
        raise ExportError(f"another layershear run is writing {out} (it holds {path}); wait for it to finish or "
                          "choose another --out") from e
    except OSError as e:
        raise ExportError(f"cannot write in {out.parent}: {e.strerror or e}; choose a writable --out") from e
    _HELD[path] = 1
    try:
        yield
    finally:
        del _HELD[path]
        lock.release()


def sweep_stale(out: Path) -> list[Path]:
    """Remove the temp folders and files a killed run left beside ``out`` (call under :func:`output_lock`).

    A ``.NAME.old-*`` folder that still holds the previous output while ``out`` is missing (a run
    killed between the two renames of a swap) is restored to ``out`` instead.

    Returns:
        The paths removed.
    """
    removed = []
    name = glob.escape(out.name)         # "model[12]" is a name, not a pattern matching model1's leftovers
    for path in sorted(out.parent.glob(f".{name}.old-*")) + sorted(out.parent.glob(f".{name}.tmp-*")):
        kept = path / out.name
        if path.name.startswith(f".{out.name}.old-") and kept.is_dir() and not out.exists():
            os.replace(kept, out)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def check_space(out: Path, nbytes: int) -> None:
    """Refuse a write of ``nbytes`` that does not fit on the file system of ``out``'s folder.

    Raises:
        ExportError: with the bytes needed and free.
    """
    folder = next(p for p in (Path(out).parent, *Path(out).parent.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if nbytes + SPACE_MARGIN > free:
        raise ExportError(f"not enough disk space for {out}: it needs {_size(nbytes)}, {_size(free)} are free in "
                          f"{folder}; free some space or choose another --out")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_failed(out: Path, e: BaseException) -> ExportError:
    text = str(e).strip()
    errno_text = os.strerror(e.errno) if isinstance(getattr(e, "errno", None), int) else None
    reason = getattr(e, "strerror", None) or errno_text or (text.splitlines()[0] if text else type(e).__name__)
    return ExportError(f"writing {out} failed: {reason}; nothing was changed at {out}")


@contextmanager
def atomic_folder(out: Path, *, nbytes: int | None = None) -> Iterator[Path]:
    """Yield an empty temp folder beside ``out``; when the body succeeds it replaces ``out``.

    Under :func:`output_lock`; stale temp folders are swept first and ``nbytes`` (what the body will
    write), when given, is checked against the free space. An existing ``out`` is removed only
    after the new folder has been renamed into place; when the body raises, the temp folder is
    deleted and ``out`` is left as it was. The folder and its files get the usual permissions (0777
    and 0666 minus the umask), not ``mkdtemp``'s private 0700 or the 0600 safetensors writes.

    Raises:
        ExportError: the lock is held, the space is short, or writing failed (an OSError or a
            safetensors error in the body, e.g. a full disk).
    """
    from safetensors import SafetensorError

    out = Path(out)
    with output_lock(out):
        sweep_stale(out)
        if nbytes is not None:
            check_space(out, nbytes)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        except OSError as e:
            raise _write_failed(out, e) from e
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
            _usual_permissions(tmp)
            _swap_into_place(tmp, out)
        except (OSError, SafetensorError) as e:
            raise _write_failed(out, e) from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _usual_permissions(folder: Path) -> None:
    """Files readable as any file the user writes (0666 minus the umask): safetensors 0.8 writes its
    files 0600, which other users of a shared model folder could not read."""
    mode = 0o666 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed only once the new
    one is in place. On any failure or interruption (SIGTERM between the two renames) the previous
    output is moved back; a SIGKILL there leaves it in ``.NAME.old-*``, which :func:`sweep_stale` restores."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    kept = old / out.name
    try:
        os.replace(out, kept)
        os.replace(tmp, out)
    except BaseException:
        if kept.exists() and not out.exists():
            os.replace(kept, out)
        if not kept.exists():
            shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to the file ``path``: a temp file beside it, fsynced, renamed over it.

    A path that exists and is not a regular file (``/dev/stdout``, a pipe) is written directly.

    Raises:
        ExportError: ``path`` is a folder, its folder is missing or not writable, or the write
            failed (a full disk); an existing file at ``path`` is then unchanged.
    """
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file path")
    if path.exists() and not path.is_file():
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as e:
            raise _write_failed(path, e) from e
        return path
    if not path.parent.is_dir():
        raise ExportError(f"folder {str(path.parent)!r} of {path} does not exist; create it or give another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except OSError as e:
        raise _write_failed(path, e) from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)      # concurrent writers: each file is whole, the last rename wins
    except OSError as e:
        raise _write_failed(path, e) from e
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


__all__ = ["OUTPUT_MARKERS", "atomic_folder", "check_space", "check_target", "output_lock", "sweep_stale",
           "write_text_atomic"]
