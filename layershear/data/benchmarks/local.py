"""Find the shared benchmark folder and read plain local files into HF-format rows.

Only the standard library and ``pyarrow`` are needed here, so local loading works on machines
without ``datasets``. Task-specific layouts (ARC jsonl, OpenBookQA tsv, ...) live in the task modules.
"""

from __future__ import annotations

import ast
import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from layershear.errors import BenchmarkError

DATA_ENV = "LAYERSHEAR_DATA"
"""Environment variable naming the shared data folder (``shared``, ``shared/data`` or ``shared/data/benchmarks``)."""

_SHARED_REL = Path("shared") / "data" / "benchmarks"


def _normalise(root: Path) -> Path | None:
    """Return the ``benchmarks`` folder for a path given as ``shared``, ``shared/data`` or itself."""
    for candidate in (root / "data" / "benchmarks", root / "benchmarks", root):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def find_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Locate the shared ``benchmarks`` folder.

    Order: ``explicit``; the ``LAYERSHEAR_DATA`` environment variable; else a
    ``shared/data/benchmarks`` folder beside any parent of the working directory or of this package
    (a project checked out next to ``../shared`` finds it). ``explicit`` and the variable may name
    ``.../shared``, ``.../shared/data`` or ``.../shared/data/benchmarks``.

    Returns:
        The ``benchmarks`` folder, or ``None`` when nothing was given and nothing was found.

    Raises:
        BenchmarkError: ``explicit`` or ``LAYERSHEAR_DATA`` names a folder that does not exist.
    """
    for value, origin in ((explicit, "data_dir"), (os.environ.get(DATA_ENV) or None, DATA_ENV)):
        if value is None:
            continue
        found = _normalise(Path(value).expanduser())
        if found is None:
            raise BenchmarkError(
                f"{origin}={os.fspath(value)!r} is not a folder; point it at shared/data/benchmarks"
            )
        return found
    starts = (Path.cwd().resolve(), Path(__file__).resolve().parent)
    for start in starts:
        for parent in (start, *start.parents):
            if (parent / _SHARED_REL).is_dir():
                return (parent / _SHARED_REL).resolve()
    return None


def require(path: Path) -> Path:
    """Return ``path`` if it exists, else raise BenchmarkError naming it."""
    if not path.exists():
        raise BenchmarkError(f"Benchmark file not found: {path}")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read one JSON object per non-empty line.

    Raises:
        BenchmarkError: The file is missing or a line is not valid JSON.
    """
    rows = []
    with require(path).open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BenchmarkError(f"{path}:{line_no}: invalid JSON ({e.msg})") from e
    return rows


def read_json(path: Path) -> list[dict[str, Any]]:
    """Read a JSON list of row objects (a JSON-lines file with a ``.json`` name also works).

    Raises:
        BenchmarkError: The file is missing, not JSON, or not a list of objects.
    """
    text = require(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return read_jsonl(path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BenchmarkError(f"{path}: expected a JSON list of row objects")
    return data


def read_lines(path: Path) -> list[str]:
    """Read the non-empty stripped lines of a text file (e.g. a ``*-labels.lst``)."""
    return [line.strip() for line in require(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def read_csv_rows(path: Path, *, delimiter: str = ",", quotes: bool = True) -> list[list[str]]:
    """Read a CSV/TSV file as lists of raw cells (no header handling); ``quotes=False``: ``"`` is plain text."""
    with require(path).open(encoding="utf-8", newline="") as f:
        if quotes:
            reader = csv.reader(f, delimiter=delimiter)
        else:
            reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE)
        return [row for row in reader if row]


def _decode_cell(value: str) -> Any:
    """Decode a cell holding a list/dict written as JSON or as a Python repr (pandas ``to_csv``)."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(value)
        except (ValueError, SyntaxError):
            continue
    return value


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Turn dotted column names (``choices.text``) into nested dicts, as HF features are."""
    row: dict[str, Any] = {}
    for key, value in flat.items():
        head, *rest = key.split(".")
        if rest:
            row.setdefault(head, {})[".".join(rest)] = value
        else:
            row[key] = value
    return row


def read_table(path: Path, structured: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Read a CSV (``,``) or TSV (tab) file with a header row into HF-format rows.

    Cells of ``structured`` columns (and of their dotted sub-columns) are decoded from JSON or a
    Python literal, so ``choices`` may be written as ``["a", "b"]`` or ``{"text": [...], ...}``.

    Raises:
        BenchmarkError: The file is missing or has no header row.
    """
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    cells = read_csv_rows(path, delimiter=delimiter)
    if not cells:
        raise BenchmarkError(f"{path}: empty file; expected a header row")
    header, body = cells[0], cells[1:]
    wanted = set(structured)
    rows = []
    for line in body:
        flat = {
            k: _decode_cell(v) if k.split(".")[0] in wanted else v
            for k, v in zip(header, line, strict=False)
        }
        rows.append(_nest(flat))
    return rows


def read_arrow_dir(path: Path) -> list[dict[str, Any]]:
    """Read a ``datasets`` ``save_to_disk`` folder of one split.

    Uses ``datasets.load_from_disk`` when ``datasets`` is installed, else reads the Arrow IPC
    stream files with ``pyarrow`` in the order ``state.json`` lists them.

    Raises:
        BenchmarkError: The folder holds a DatasetDict (several splits) or no ``.arrow`` files.
    """
    if (path / "dataset_dict.json").exists():
        splits = sorted(p.name for p in path.iterdir() if p.is_dir())
        raise BenchmarkError(
            f"{path} holds a DatasetDict; pass one split folder instead: {', '.join(splits)}"
        )
    try:
        import datasets
    except ImportError:
        return _read_arrow_files(path)
    return datasets.load_from_disk(str(path)).to_list()


def _read_arrow_files(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa

    names: list[str] = []
    state = path / "state.json"
    if state.exists():
        names = [f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
    files = [path / n for n in names] or sorted(path.glob("*.arrow"))
    if not files:
        raise BenchmarkError(f"{path}: no .arrow files; expected a datasets save_to_disk folder")
    tables = []
    for file in files:
        buffer = pa.py_buffer(require(file).read_bytes())
        try:
            tables.append(pa.ipc.open_stream(buffer).read_all())
        except pa.ArrowInvalid:
            tables.append(pa.ipc.open_file(buffer).read_all())
    return pa.concat_tables(tables).to_pylist()


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """Read a parquet file (the Hub's storage format) into rows."""
    import pyarrow.parquet as pq

    return pq.read_table(str(require(path))).to_pylist()
