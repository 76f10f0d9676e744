"""A self-contained HTML page for an analysis run: title, summary, tables and figures (inline CSS, no JavaScript)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path, PurePosixPath, PureWindowsPath

from layershear.errors import LayershearError

Table = tuple[str, list[str], list[list[str]]]  # (caption, header, rows)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; }
table { border-collapse: collapse; margin: 1.5rem 0; font-size: 0.9rem; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.4rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5rem 0; }
img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9rem; }
""".strip()


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _problems(tables: Sequence[Table], images: Sequence[tuple[str, str]]) -> list[str]:
    problems = []
    for caption, header, rows in tables:
        problems += [f"table {caption!r} row {i} has {len(r)} cells, header has {len(header)}" for i, r in enumerate(rows) if len(r) != len(header)]
    for _, name in images:
        if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            problems.append(f"image {name!r} is not a file name relative to out_dir")
    return problems


def _table(caption: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<caption>{_e(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _figure(caption: str, name: str) -> str:
    return f'<figure><img src="{_e(name)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def write_report(
    out_dir: Path,
    *,
    title: str,
    summary: Mapping[str, str],
    tables: Sequence[Table],
    images: Sequence[tuple[str, str]],
) -> Path:
    """Write ``out_dir/report.html``: one self-contained page (inline CSS, no JavaScript, no external assets).

    All text is HTML-escaped. Images are referenced, not embedded, so keep them beside the report.

    Args:
        out_dir: folder for the report; created if missing. An existing ``report.html`` is replaced.
        title: page title and top heading.
        summary: ``{term: value}`` shown as a definition list, in the given order.
        tables: ``(caption, header, rows)`` per table; every row has as many cells as the header.
        images: ``(caption, file_name)`` per figure; ``file_name`` is relative to ``out_dir``
            (e.g. ``"heatmap.png"``) and becomes ``<img src>``; the caption is also the alt text.

    Returns:
        Path of the written ``report.html``.

    Raises:
        LayershearError: a table row's length differs from its header, or an image name is absolute or
            contains ``..`` (every problem is listed in one message).
    """
    problems = _problems(tables, images)
    if problems:
        raise LayershearError("Cannot write the HTML report: " + "; ".join(problems) + "; fix the inputs of write_report")
    summary_html = "\n".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in summary.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>',
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f"<dl>\n{summary_html}\n</dl>" if summary else "",
        *(_table(*t) for t in tables),
        *(_figure(caption, name) for caption, name in images),
        "</body>",
        "</html>",
    ]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text("\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return path
