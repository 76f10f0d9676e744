"""layershear.export.atomic: outputs that cannot destroy data (target checks, the output lock, stale temp
folders, disk space, atomic folders and files)."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from filelock import FileLock, Timeout

from layershear.errors import ExportError
from layershear.export import atomic
from layershear.export.atomic import (
    SPACE_MARGIN,
    atomic_folder,
    check_space,
    check_target,
    output_lock,
    sweep_stale,
    write_text_atomic,
)

MiB = 2**20


def enospc() -> OSError:
    """A full disk, as the OS reports it (errno and strerror)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (hidden ones included) -> SHA-256 of its bytes ("dir" for folders)."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def make_output(out: Path, text: str = "old") -> Path:
    """A previous output folder at ``out``: a config.json and a shard-like file."""
    out.mkdir(parents=True)
    (out / "config.json").write_text(f'{{"v": "{text}"}}')
    (out / "model.safetensors").write_bytes(text.encode() * 100)
    return out


def beside(out: Path) -> set[str]:
    """What lies in ``out``'s folder, but its lock file (which filelock may or may not delete on release)."""
    return set(os.listdir(out.parent)) - {f".{out.name}.lock"}


# --- check_target ---------------------------------------------------------------------------------

@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_output(tmp_path / "models" / "src", "source")


@pytest.mark.parametrize(
    ("where", "word"),
    [(".", "is"), ("pruned", "is inside"), ("sub/deeper", "is inside"), ("..", "contains"), ("../..", "contains")],
)
def test_target_overlapping_the_source_is_refused(source: Path, where: str, word: str) -> None:
    out = Path(os.path.normpath(source / where))
    before = snapshot(source.parent.parent)
    for overwrite in (False, True):
        with pytest.raises(ExportError, match=rf"--out .* {word} the source checkpoint {source}; writing it would destroy"):
            check_target(out, overwrite, sources=[source])
    assert snapshot(source.parent.parent) == before


def test_target_aliasing_the_source_through_a_link_is_refused(source: Path, tmp_path: Path) -> None:
    link = tmp_path / "alias"
    link.symlink_to(source, target_is_directory=True)
    with pytest.raises(ExportError, match="is the source checkpoint"):
        check_target(link, True, sources=[str(source)])
    with pytest.raises(ExportError, match="is the source checkpoint"):
        check_target(source, True, sources=[link])
    assert (source / "config.json").read_text() == '{"v": "source"}'


def test_target_beside_the_source_is_allowed(source: Path) -> None:
    check_target(source.parent / "src-pruned", False, sources=[source])
    check_target(source.parent / "sr", False, sources=[source])        # a name prefix is not "inside"


def test_overwrite_never_replaces_unrelated_files(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "notes.txt", "z.txt"):
        (out / name).write_text(name)
    (out / "config.json").mkdir()                  # a folder named like a marker does not count
    before = snapshot(out)
    with pytest.raises(ExportError, match=r"exists; pass --overwrite to replace it"):
        check_target(out, False)
    with pytest.raises(ExportError, match=r"--overwrite replaces only a model folder or a layershear output, and .*photos holds "
                                          r"other files \(a\.jpg, b\.jpg, c\.jpg, \.\.\. \(6 entries\)\); choose another --out"):
        check_target(out, True)
    assert snapshot(out) == before


@pytest.mark.parametrize(("files", "replaceable"), [
    ({"layershear.json": "{}"}, True),                                       # a layershear export
    ({"report.json": '{"layershear_version": "0.1.0"}', "a.png": "x"}, True),  # a layershear analyze report
    ({"config.json": "{}", "model.safetensors": "x"}, True),                 # a model folder
    ({"config.json": '{"editor": "vim"}', "thesis.tex": "x"}, False),        # a config.json alone is not a model
    ({"report.json": "{}", "notes.txt": "x"}, False),                        # nor is any report.json
])
def test_overwrite_replaces_only_a_model_or_layershear_output(tmp_path: Path, files: dict, replaceable: bool) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    with pytest.raises(ExportError, match="pass --overwrite"):
        check_target(out, False)
    if replaceable:
        check_target(out, True)
    else:
        with pytest.raises(ExportError, match="--overwrite replaces only a model folder"):
            check_target(out, True)
    assert sorted(os.listdir(out)) == sorted(files)     # checking deletes nothing


def test_interrupted_swap_keeps_the_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = make_output(tmp_path / "out")
    before = snapshot(out)
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:                 # SIGTERM between moving the old output aside and renaming the new one
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), atomic_folder(out) as tmp:
        (tmp / "config.json").write_text('{"new": 1}')
    monkeypatch.setattr(atomic.os, "replace", real)
    assert snapshot(out) == before and beside(out) == {"out"}        # no temp or old folder left


def test_missing_or_empty_target_needs_no_overwrite(tmp_path: Path) -> None:
    check_target(tmp_path / "new" / "deeper", False)
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty", False)


def test_target_under_a_file_or_being_a_file_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out in (afile / "out", afile / "x" / "out"):
        with pytest.raises(ExportError, match=rf"--out {out}: {afile} is a file, not a folder; choose another --out"):
            check_target(out, True)
    with pytest.raises(ExportError, match=r"Output '.*afile' is a file; choose a folder for --out"):
        check_target(afile, True)
    assert afile.read_text() == "keep"


# --- output_lock ----------------------------------------------------------------------------------

HOLDER = ("import sys, time\nfrom filelock import FileLock\nlock = FileLock(sys.argv[1])\nlock.acquire()\n"
          "print('held', flush=True)\ntime.sleep(30)\n")


def test_lock_held_by_another_process_refuses_until_it_dies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    lock_file = tmp_path / ".out.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ExportError, match=rf"another layershear run is writing {out} \(it holds .*\.out\.lock\); wait for it"):
            with output_lock(out):
                pytest.fail("entered a lock another process holds")
        with pytest.raises(ExportError, match="another layershear run"):
            with atomic_folder(out):
                pytest.fail("wrote under a lock another process holds")
        assert beside(out) == set() and lock_file.is_file()   # the refused atomic_folder made no temp folder
        holder.send_signal(signal.SIGKILL)              # no clean-up runs: the OS drops the lock
        assert holder.wait(timeout=10) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    with output_lock(out):
        with pytest.raises(Timeout):
            FileLock(lock_file, timeout=0).acquire()   # and now this process holds it
    lock = FileLock(lock_file, timeout=0)
    lock.acquire()                                      # released on exit
    lock.release()


def test_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    lock_file = tmp_path / ".out.lock"
    with output_lock(out):
        with output_lock(tmp_path / "." / "out"):      # the same lock, spelled differently
            with output_lock(out):
                pass
        with pytest.raises(Timeout):
            FileLock(lock_file, timeout=0).acquire()   # the inner exits did not release the outer hold
        with atomic_folder(out) as tmp:                # atomic_folder takes the lock itself
            (tmp / "config.json").write_text("{}")
    assert (out / "config.json").is_file()
    lock = FileLock(lock_file, timeout=0)
    lock.acquire()
    lock.release()


def test_lock_beside_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(ExportError, match=r"cannot create .*afile for .*; choose another --out"):
        with output_lock(tmp_path / "afile" / "out"):
            pass
    assert (tmp_path / "afile").read_text() == "keep"


# --- sweep_stale ----------------------------------------------------------------------------------

def test_sweep_removes_temp_folders_and_files_only(tmp_path: Path) -> None:
    out = make_output(tmp_path / "out", "current")
    (tmp_path / ".out.tmp-abc").mkdir()
    (tmp_path / ".out.tmp-abc" / "model.safetensors").write_text("half written")
    (tmp_path / ".out.tmp-file").write_text("half written")
    for other in (".other.tmp-abc", "out.tmp-abc", ".outer.tmp-abc"):     # not ours
        (tmp_path / other).mkdir()
    before = snapshot(out)
    removed = sweep_stale(out)
    assert sorted(removed) == [tmp_path / ".out.tmp-abc", tmp_path / ".out.tmp-file"]
    assert beside(out) == {"out", ".other.tmp-abc", "out.tmp-abc", ".outer.tmp-abc"}
    assert snapshot(out) == before
    assert sweep_stale(out) == []


def test_sweep_restores_the_previous_output_of_a_run_killed_mid_swap(tmp_path: Path) -> None:
    out = tmp_path / "out"
    kept = make_output(tmp_path / ".out.old-xyz" / "out", "previous")
    expected = snapshot(kept)
    (tmp_path / ".out.tmp-abc").mkdir()                 # the new output, never renamed into place
    assert sorted(sweep_stale(out)) == [tmp_path / ".out.old-xyz", tmp_path / ".out.tmp-abc"]
    assert beside(out) == {"out"}
    assert snapshot(out) == expected


def test_sweep_drops_the_previous_output_when_the_new_one_is_in_place(tmp_path: Path) -> None:
    out = make_output(tmp_path / "out", "new")
    make_output(tmp_path / ".out.old-xyz" / "out", "previous")
    before = snapshot(out)
    assert sweep_stale(out) == [tmp_path / ".out.old-xyz"]
    assert beside(out) == {"out"}
    assert snapshot(out) == before


def test_sweep_drops_an_empty_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / ".out.old-xyz").mkdir()                 # killed before the first rename
    assert sweep_stale(out) == [tmp_path / ".out.old-xyz"]
    assert beside(out) == set()


def test_atomic_folder_sweeps_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_output(tmp_path / ".out.old-xyz" / "out", "previous")
    with atomic_folder(out) as tmp:
        assert (out / "config.json").read_text() == '{"v": "previous"}'    # restored before the body runs
        (tmp / "config.json").write_text('{"v": "new"}')
    assert (out / "config.json").read_text() == '{"v": "new"}'
    assert beside(out) == {"out"}


# --- check_space ----------------------------------------------------------------------------------

@pytest.fixture
def free_bytes(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Make ``shutil.disk_usage`` (as atomic calls it) report ``state["free"]`` and record the folders asked."""
    state: dict = {"free": 5 * MiB, "asked": []}

    def disk_usage(path):
        state["asked"].append(Path(path))
        return SimpleNamespace(total=10 * 2**30, used=10 * 2**30 - state["free"], free=state["free"])

    monkeypatch.setattr(atomic.shutil, "disk_usage", disk_usage)
    return state


def test_check_space_names_what_is_needed_and_free(tmp_path: Path, free_bytes: dict) -> None:
    out = tmp_path / "not" / "yet" / "out"
    with pytest.raises(ExportError, match=rf"not enough disk space for {out}: it needs 100\.0 MiB, 5\.0 MiB are free in "
                                          rf"{tmp_path}; free some space or choose another --out"):
        check_space(out, 100 * MiB)
    assert free_bytes["asked"] == [tmp_path]            # the nearest folder that exists
    free_bytes["free"] = 2 * 2**30
    with pytest.raises(ExportError, match=r"it needs 3\.00 GiB, 2\.00 GiB are free"):
        check_space(out, 3 * 2**30)
    assert not (tmp_path / "not").exists()


def test_check_space_keeps_a_margin(tmp_path: Path, free_bytes: dict) -> None:
    free_bytes["free"] = 100 * MiB + SPACE_MARGIN
    check_space(tmp_path / "out", 100 * MiB)
    with pytest.raises(ExportError, match="not enough disk space"):
        check_space(tmp_path / "out", 100 * MiB + 1)


def test_atomic_folder_short_of_space_writes_nothing(tmp_path: Path, free_bytes: dict) -> None:
    out = make_output(tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(ExportError, match=r"it needs 100\.0 MiB, 5\.0 MiB are free"):
        with atomic_folder(out, nbytes=100 * MiB):
            pytest.fail("the body ran although the space is short")
    assert beside(out) == {"out"}
    assert snapshot(out) == before


# --- atomic_folder --------------------------------------------------------------------------------

def test_atomic_folder_replaces_the_previous_output(tmp_path: Path) -> None:
    out = make_output(tmp_path / "out", "old")
    with atomic_folder(out, nbytes=1000) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-") and not any(tmp.iterdir())
        assert (out / "config.json").read_text() == '{"v": "old"}'     # untouched while the body runs
        (tmp / "config.json").write_text('{"v": "new"}')
    assert os.listdir(out) == ["config.json"] and (out / "config.json").read_text() == '{"v": "new"}'
    assert beside(out) == {"out"}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask


def test_full_disk_in_the_body_changes_nothing(tmp_path: Path) -> None:
    out = make_output(tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(ExportError, match=rf"writing {out} failed: No space left on device; nothing was changed at {out}$"):
        with atomic_folder(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise enospc()
    assert snapshot(out) == before
    assert beside(out) == {"out"}


def test_interrupt_in_the_body_propagates_and_cleans_up(tmp_path: Path) -> None:
    out = make_output(tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt
    assert snapshot(out) == before
    assert beside(out) == {"out"}
    with output_lock(out):                              # and the lock was released
        pass


def test_other_errors_in_the_body_propagate_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="bad block"):
        with atomic_folder(out) as tmp:
            (tmp / "x").write_text("x")
            raise ValueError("bad block")
    assert beside(out) == set()


# --- write_text_atomic ----------------------------------------------------------------------------

def test_write_text_atomic_writes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    assert write_text_atomic(path, '{"a": 1}') == path
    assert path.read_text() == '{"a": 1}'
    assert write_text_atomic(str(path), "é\n") == path
    assert path.read_text(encoding="utf-8") == "é\n"
    assert os.listdir(tmp_path) == ["report.json"]


def test_write_text_atomic_refuses_a_folder_or_a_missing_parent(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(ExportError, match=r"dir is a folder; give a file path"):
        write_text_atomic(tmp_path / "dir", "x")
    missing = tmp_path / "missing" / "report.json"
    with pytest.raises(ExportError, match=r"folder '.*missing' of .*report\.json does not exist; create it or give another path"):
        write_text_atomic(missing, "x")
    assert os.listdir(tmp_path) == ["dir"] and not any((tmp_path / "dir").iterdir())


def test_write_text_atomic_failure_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.json"
    path.write_text("previous")

    def fsync(fd: int) -> None:
        raise enospc()

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(ExportError, match=rf"writing {path} failed: No space left on device; nothing was changed at {path}$"):
        write_text_atomic(path, "new content")
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["report.json"]        # no temp file left


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_write_text_atomic_to_a_device_writes_directly() -> None:
    assert write_text_atomic("/dev/null", "discarded") == Path("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)       # not replaced by a regular file


def test_sweep_reads_the_name_literally(tmp_path: Path) -> None:
    other = tmp_path / ".model1.old-abc" / "model1"           # another output's backup, killed mid-swap
    other.mkdir(parents=True)
    (other / "config.json").write_text("{}")
    mine = tmp_path / ".model[12].tmp-xyz"
    mine.mkdir()
    assert sweep_stale(tmp_path / "model[12]") == [mine]      # "[12]" is not a pattern matching model1
    assert (other / "config.json").is_file() and not mine.exists()


def test_atomic_folder_gives_the_usual_permissions(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_folder(out) as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
        os.chmod(tmp / "model.safetensors", 0o600)          # as safetensors 0.8 writes its files
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o666 & ~mask
