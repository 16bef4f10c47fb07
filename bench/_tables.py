"""Each benchmark's printed tables, also as a JSON file: ``runs/bench/<benchmark>.json``.

A person reads the printed table; a script comparing runs reads the JSON beside it, which
holds the same cells (as printed, markup removed) under the same column headers, with the
title and caption that say what was measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

BENCH_JSON_DIR = Path("runs") / "bench"
"""Where the JSON files go (relative to the working directory), beside aggregation.json."""


def _plain(value: object) -> str:
    if isinstance(value, Text):
        return value.plain
    if isinstance(value, str):
        return Text.from_markup(value).plain
    return str(value)


def table_json(table: Table) -> dict[str, Any]:
    """Title, caption, column headers and rows of cells of a rich table."""
    headers = [_plain(column.header) for column in table.columns]
    columns = [[_plain(cell) for cell in column.cells] for column in table.columns]
    return {
        "title": _plain(table.title) if table.title is not None else None,
        "caption": _plain(table.caption) if table.caption is not None else None,
        "columns": headers,
        "rows": [dict(zip(headers, row, strict=True)) for row in zip(*columns, strict=True)],
    }


def _write(benchmark: str, tables: list[dict[str, Any]], directory: Path | None) -> Path:
    path = (directory or BENCH_JSON_DIR) / f"{benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": benchmark,
        "tables": tables,
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def write_tables(benchmark: str, tables: list[Table], directory: Path | None = None) -> Path:
    """Write ``tables`` to ``<directory>/<benchmark>.json``; returns the path."""
    return _write(benchmark, [table_json(table) for table in tables], directory)


def write_rows(
    benchmark: str, title: str, rows: list[dict[str, Any]], directory: Path | None = None
) -> Path:
    """For a benchmark that prints plain lines: its rows as one table of figures."""
    columns = list(rows[0]) if rows else []
    table = {"title": title, "caption": None, "columns": columns, "rows": rows}
    return _write(benchmark, [table], directory)
