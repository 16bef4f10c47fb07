"""A standalone HTML page of headed tables, every cell escaped (hospital-written text too)."""

from __future__ import annotations

import html
from collections.abc import Sequence

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}"
    "th.text,td.text{text-align:left}.fail{color:#b00}.pass{color:#070}"
)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: set[int], ident: str = ""
) -> str:
    """An HTML table; ``text_columns`` align left."""
    head = "".join(
        f'<th class="text">{html.escape(h)}</th>'
        if i in text_columns
        else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{html.escape(c)}</td>'
            if i in text_columns
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    attribute = f' id="{html.escape(ident)}"' if ident else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"


def paragraph(text: str, css_class: str = "") -> str:
    attribute = f' class="{html.escape(css_class)}"' if css_class else ""
    return f"<p{attribute}>{html.escape(text)}</p>"


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{html.escape(text)}</h{level}>"


def page(title: str, parts: Sequence[str]) -> str:
    """A whole document: ``parts`` are already-escaped fragments from this module."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        + heading(title, 1)
        + "".join(parts)
        + "</body></html>\n"
    )
