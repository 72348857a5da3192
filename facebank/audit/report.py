"""A generic report folder: `report.md` with images embedded, every table also as CSV and JSON.

The caller assembles `Section`s (from the bank, a calibration, a pick audit); this module only
lays them out. Layout of `out_dir`:

    report.md            the readable report, images embedded by relative path
    report.html          the same, self-contained: images embedded as data URIs
    report.json          every section's title, text, tables and image paths
    tables/<slug>.csv    one file per table (all rows)
    tables/<slug>.json   the same rows as JSON
    images/<name>.png    images that were not already inside out_dir

Every file is written to a temporary name in the same folder and moved into place with
`os.replace`, so a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from facebank.errors import InputError
from facebank._io.files import atomic_write_text
from facebank.audit.html import anchor, render_html

__all__ = ["Section", "rows_to_csv", "write_csv", "write_report"]

# Tables longer than this are cut in report.md (never in the CSV/JSON next to it).
_MD_MAX_ROWS = 50


@dataclass(frozen=True)
class Section:
    """One section of a report."""

    title: str
    text: str = ""  # markdown paragraph(s) shown under the title
    tables: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)  # name -> rows
    images: Sequence[str | os.PathLike] = ()  # PNG paths, embedded in this order


def _fieldnames(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    # Union of keys in first-seen order: rows may differ (e.g. an extra "note").
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            names.setdefault(str(key), None)
    return list(names)


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of `rows` (a header from the union of their keys; missing cells empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_fieldnames(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({str(k): _plain(v) for k, v in row.items()})
    return buf.getvalue()


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write `rows` as CSV to `path` atomically; returns the path."""
    return atomic_write_text(path, rows_to_csv(rows))


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly scalar: numpy scalars to Python, paths to str."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/inf: write them as strings a reader can still parse with float().
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return slug or "table"


def _md_cell(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(rows: Sequence[Mapping[str, Any]], csv_rel: str) -> str:
    if not rows:
        return f"(no rows; [{csv_rel}]({csv_rel}))\n"
    names = _fieldnames(rows)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows[:_MD_MAX_ROWS]:
        lines.append("| " + " | ".join(_md_cell(row.get(n)) for n in names) + " |")
    more = len(rows) - _MD_MAX_ROWS
    tail = f"{more} more rows in " if more > 0 else "All rows: "
    return "\n".join(lines) + f"\n\n{tail}[{csv_rel}]({csv_rel})\n"


def _place_image(image: Path, out_dir: Path, used: set[str]) -> str:
    """The image's path relative to out_dir, copying it into images/ when it lies outside."""
    image = image.resolve()
    if not image.is_file():
        raise InputError(f"report image does not exist: {image}")
    try:
        return image.relative_to(out_dir).as_posix()
    except ValueError:
        pass
    name, n = image.name, 1
    while name in used:  # two images of the same name from different folders
        name, n = f"{image.stem}_{n}{image.suffix}", n + 1
    used.add(name)
    dest = out_dir / "images" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    shutil.copyfile(image, tmp)
    os.replace(tmp, dest)
    return dest.relative_to(out_dir).as_posix()


def write_report(
    out_dir: str | os.PathLike,
    sections: Sequence[Section],
    *,
    title: str = "facebank audit",
) -> Path:
    """Write `report.md`, `report.json` and one CSV + JSON per table under `out_dir`.

    Table names become file names (slugged, made unique across sections). Images outside
    `out_dir` are copied into `out_dir/images/`. Returns the path of `report.md`.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    used_tables: set[str] = set()
    used_images: set[str] = set()
    md = [f"# {title}\n", "Contents: " + " · ".join(f"[{sec.title}](#{anchor(i, sec.title)})"
                                                   for i, sec in enumerate(sections) if isinstance(sec, Section)) + "\n"]
    doc: dict[str, Any] = {"title": title, "sections": []}
    html_tables: dict[int, list] = {}
    html_images: dict[int, list] = {}
    for i, section in enumerate(sections):
        if not isinstance(section, Section):
            raise InputError(f"sections must be Section objects, got {type(section).__name__}")
        md.append(f'<a id="{anchor(i, section.title)}"></a>\n\n## {section.title}\n')
        if section.text:
            md.append(section.text.rstrip() + "\n")
        entry: dict[str, Any] = {"title": section.title, "text": section.text, "tables": {}, "images": []}
        for name, rows in section.tables.items():
            rows = list(rows)
            slug, n = _slug(name), 1
            base = slug
            while slug in used_tables:
                slug, n = f"{base}_{n}", n + 1
            used_tables.add(slug)
            csv_rel = f"tables/{slug}.csv"
            write_csv(rows, out_dir / csv_rel)
            json_rows = _json_safe(rows)
            atomic_write_text(out_dir / f"tables/{slug}.json", json.dumps(json_rows, indent=1) + "\n")
            md.append(f"### {name}\n\n" + _md_table(rows, csv_rel))
            entry["tables"][name] = {"csv": csv_rel, "json": f"tables/{slug}.json", "rows": json_rows}
            html_tables.setdefault(i, []).append((name, rows, csv_rel))
        for image in section.images:
            rel = _place_image(Path(image), out_dir, used_images)
            md.append(f"![{Path(rel).stem}]({rel})\n")
            entry["images"].append(rel)
            html_images.setdefault(i, []).append(rel)
        doc["sections"].append(entry)
    atomic_write_text(out_dir / "report.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(out_dir / "report.html", render_html(title, sections, html_tables, html_images, out_dir,
                                                           lambda v: _md_cell(v).replace("\\|", "|"), _fieldnames,
                                                           _MD_MAX_ROWS))
    return atomic_write_text(out_dir / "report.md", "\n".join(md))
