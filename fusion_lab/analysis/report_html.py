"""The HTML pieces of `fusionlab report`: one self-contained page, no network at view time.

Every string from a study (names, labels, notes, errors, configs) goes through ``esc``;
images are PNG bytes inlined as ``data:`` URIs; the style sheet is inline and there is no
script. Only the standard library.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1b1b1b; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
.meta { color: #555; font-size: .9em; }
.banner { border: 2px solid #b00020; background: #fde8ea; padding: .6em 1em; margin: 1em 0;
          border-radius: 4px; }
.banner.warn { border-color: #a66b00; background: #fff4dc; }
.banner strong { display: block; margin-bottom: .3em; }
.banner ul { margin: .3em 0 0 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.status-failed td, tr.status-interrupted td { background: #fde8ea; }
tr.status-running td, tr.status-pending td { background: #fff4dc; }
.notes { font-size: .85em; color: #333; padding-left: 1.2em; }
.notes li { white-space: pre-wrap; }
.notes li.sub { list-style: none; font-family: ui-monospace, monospace; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: .5em; overflow-x: auto; font-size: .8em; }
code { font-family: ui-monospace, monospace; font-size: .9em; }
details summary { cursor: pointer; }
"""


def esc(value: Any) -> str:
    """A value as HTML text: ``str`` of it with &, <, >, " and ' escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: Iterable[str]) -> str:
    """The whole document: ``title`` escaped here, ``body`` already HTML."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def table(columns: Sequence[Any], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] = (),
          row_classes: Sequence[str] = (), raw: Sequence[bool] = ()) -> str:
    """A table; cells are escaped unless their column is ``raw`` (already HTML)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    lines = [f"<div class=\"scroll\"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{esc(row_classes[i])}"' if i < len(row_classes) else ""
        cells = []
        for j, v in enumerate(row):
            attr = ' class="num"' if j < len(numeric) and numeric[j] else ""
            cells.append(f"<td{attr}>{v if j < len(raw) and raw[j] else esc(v)}</td>")
        lines.append(f"<tr{cls}>{''.join(cells)}</tr>")
    lines.append("</tbody>\n</table></div>")
    return "\n".join(lines)


def frame_table(frame: Any, first_text_cols: int = 3) -> str:
    """A pandas DataFrame of display strings (``fusionlab table``'s cells) as a table."""
    cols = list(frame.columns)
    numeric = [i >= first_text_cols for i in range(len(cols))]
    return table(cols, frame.values.tolist(), numeric)


def notes(lines: Iterable[str]) -> str:
    """The notes under a table; indented lines (one per run not done) in monospace."""
    items = [f'<li class="sub">{esc(n.strip())}</li>' if n.startswith("  ")
             else f"<li>{esc(n)}</li>" for n in lines]
    return f'<ul class="notes">{"".join(items)}</ul>' if items else ""


def image(png: bytes, alt: str) -> str:
    """PNG bytes inlined as a data: URI (the page needs no other file)."""
    if not png.startswith(PNG_MAGIC):
        raise ValueError("not a PNG")
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def banner(heading: str, items: Iterable[str], kind: str = "error", ident: str = "") -> str:
    """A box at the top of the page: ``heading`` and a list of ``items`` (text, escaped)."""
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    attr = f' id="{esc(ident)}"' if ident else ""
    cls = "banner" if kind == "error" else "banner warn"
    return (f'<div class="{cls}"{attr} role="alert"><strong>{esc(heading)}</strong>'
            + (f"<ul>{lis}</ul>" if lis else "") + "</div>")


def section(title: str, *parts: str, ident: str = "") -> str:
    """An ``<h2>`` and its parts (already HTML)."""
    attr = f' id="{esc(ident)}"' if ident else ""
    return f"<section{attr}>\n<h2>{esc(title)}</h2>\n" + "\n".join(p for p in parts if p) + (
        "\n</section>")


def para(text: str, cls: str = "") -> str:
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def details(summary: str, body_text: str) -> str:
    """A folded block: ``summary`` and preformatted ``body_text`` (both escaped)."""
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(body_text)}</pre></details>"
