"""A self-contained `report.html` beside `report.md`: the same sections, images embedded as data URIs.

Only the markdown facebank writes is rendered (headings, paragraphs, `- ` lists, **bold**,
`code`, [links](x)); text is escaped first, so nothing in a file name can inject markup.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["render_html"]

_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
        "th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}code{background:#f3f3f3}")


def _inline(text: str) -> str:
    t = html.escape(text, quote=True)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"\*(.+?)\*", r"<i>\1</i>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return re.sub(r"\[(.+?)\]\((.+?)\)", r'<a href="\2">\1</a>', t)


def _blocks(text: str) -> str:
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = [ln for ln in para.splitlines() if ln.strip()]
        if lines and all(ln.lstrip().startswith("- ") for ln in lines):
            out.append("<ul>" + "".join(f"<li>{_inline(ln.lstrip()[2:])}</li>" for ln in lines) + "</ul>")
        elif lines:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


def _table(rows: Sequence[Mapping[str, Any]], names: list[str], cell, max_rows: int) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(r.get(n)))}</td>" for n in names) + "</tr>"
                   for r in rows[:max_rows])
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(title: str, sections: Sequence[Any], tables: Mapping[int, list], images: Mapping[int, list],
                out_dir: Path, cell, fieldnames, max_rows: int) -> str:
    """The HTML page; `tables[i]` = [(name, rows, csv_rel)], `images[i]` = [rel path] of section i."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for i, sec in enumerate(sections):
        parts.append(f"<h2>{html.escape(sec.title)}</h2>{_blocks(sec.text)}")
        for name, rows, csv_rel in tables.get(i, []):
            more = f" (first {max_rows} of {len(rows)})" if len(rows) > max_rows else ""
            parts.append(f"<h3>{html.escape(name)}</h3>" + (_table(rows, fieldnames(rows), cell, max_rows) if rows else "")
                         + f"<p>All rows{more}: <a href='{html.escape(csv_rel)}'>{html.escape(csv_rel)}</a></p>")
        for rel in images.get(i, []):
            data = base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(Path(rel).stem)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
