"""Every benchmark writes its printed tables as JSON too (``runs/bench/<name>.json``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from rich.table import Table
from rich.text import Text

from bench.__main__ import discover_benchmarks
from bench._tables import write_rows, write_tables

WRITERS = ("write_tables(", "write_rows(", "write_json(")


def test_a_table_is_written_with_its_cells_as_printed(tmp_path: Path) -> None:
    table = Table(title="[bold]contenders[/]", caption="min over 3 runs")
    table.add_column("contender")
    table.add_column("s", justify="right")
    table.add_row("[green]fedsilo[/]", "1.25")
    table.add_row(Text("flower"), "2.50")
    path = write_tables("demo_bench", [table], tmp_path)
    document = json.loads(path.read_text())
    assert path == tmp_path / "demo_bench.json" and document["benchmark"] == "demo_bench"
    [written] = document["tables"]
    assert written["title"] == "contenders" and written["caption"] == "min over 3 runs"
    assert written["columns"] == ["contender", "s"]
    assert written["rows"] == [
        {"contender": "fedsilo", "s": "1.25"},
        {"contender": "flower", "s": "2.50"},
    ]
    rows = [{"hospitals": 20, "synth_s": 3.5}]
    plain = json.loads(write_rows("lines_bench", "synth", rows, tmp_path).read_text())
    assert plain["tables"][0]["rows"] == rows and plain["tables"][0]["columns"] == [
        "hospitals",
        "synth_s",
    ]


WITHOUT_TABLES = {"plain_loop"}  # a program that writes its one result with --out
CHAOS = "chaos.__main__"  # the fault suite, beside bench/, writes its table of figures too


@pytest.mark.parametrize(
    "name",
    [name for name in [*discover_benchmarks(), CHAOS] if name not in WITHOUT_TABLES],
)
def test_every_benchmark_writes_its_tables_as_json(name: str) -> None:
    spec = importlib.util.find_spec(name if name == CHAOS else f"bench.{name}")
    assert spec is not None and spec.origin is not None, name
    source = Path(spec.origin).read_text()
    assert any(writer in source for writer in WRITERS), f"{name} prints tables without JSON"
