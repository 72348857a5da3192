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

__all__ = ["anchor", "render_html"]

# Tables scroll inside their own box (wide ones sideways, long ones down, the header row stays):
# the page keeps its width and a 500-row table does not push the next section off by metres.
_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;line-height:1.4}"
        "h1{margin:.2em 0}.scroll{display:inline-block;overflow:auto;max-height:28em;max-width:100%;margin:.5em 0;border:1px solid #ddd}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}"
        "th{background:#f3f3f3;position:sticky;top:0}img{max-width:100%;display:block;margin:1em 0}"
        "code{background:#f3f3f3}nav{font-size:13px;margin:.5em 0 1em}nav a{margin-right:1em;white-space:nowrap}"
        "section.verdict .scroll{max-height:none}section.verdict td{font-size:13px}"
        "tr.warning td{background:#fff4e0}tr.warning td.status{color:#a04000;font-weight:bold}"
        "tr.ok td.status{color:#1a7f37}")


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
    # A `status` column (the verdict's ok | warning | info) colours its row.
    body = "".join((f"<tr class='{html.escape(str(r['status']))}'>" if "status" in r else "<tr>")
                   + "".join(f"<td{' class=status' if n == 'status' else ''}>{html.escape(cell(r.get(n)))}</td>"
                             for n in names) + "</tr>"
                   for r in rows[:max_rows])
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def anchor(i: int, title: str) -> str:
    """The id of section i (report.md's table of contents links to the same)."""
    return f"s{i}-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_html(title: str, sections: Sequence[Any], tables: Mapping[int, list], images: Mapping[int, list],
                out_dir: Path, cell, fieldnames, max_rows: int) -> str:
    """The HTML page; `tables[i]` = [(name, rows, csv_rel)], `images[i]` = [rel path] of section i."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<nav>Contents: " + "".join(f"<a href='#{anchor(i, sec.title)}'>{html.escape(sec.title)}</a>"
                                             for i, sec in enumerate(sections)) + "</nav>")
    for i, sec in enumerate(sections):
        kind = " class='verdict'" if sec.title == "Verdict" and i == 0 else ""
        parts.append(f"<section{kind} id='{anchor(i, sec.title)}'><h2>{html.escape(sec.title)}</h2>{_blocks(sec.text)}")
        for name, rows, csv_rel in tables.get(i, []):
            more = f" (first {max_rows} of {len(rows)})" if len(rows) > max_rows else ""
            parts.append(f"<h3>{html.escape(name)}</h3>" + (_table(rows, fieldnames(rows), cell, max_rows) if rows else "")
                         + f"<p>All rows{more}: <a href='{html.escape(csv_rel)}'>{html.escape(csv_rel)}</a></p>")
        for rel in images.get(i, []):
            data = base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(Path(rel).stem)}' src='data:image/png;base64,{data}'>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
