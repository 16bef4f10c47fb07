"""A CSV exported with semicolons (European spreadsheets) and the label value read as the event."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedsilo.testing.cli import run_fedsilo
from fl_core.data.prepared import PreparedFolderSource
from fl_core.data.tabular import detect_delimiter, prepare_table
from fl_core.errors import ConfigError

SITE, LABEL = "hospital", "outcome"


def _lines(rows: int = 120, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    body = [
        [f"Hosp {'AB'[i % 2]}", f"{rng.integers(20, 90)}", f"{rng.normal(80, 12):.1f}",
         str(rng.choice(["Alive", "Expired"], p=[0.75, 0.25]))]
        for i in range(rows)
    ]  # fmt: skip
    return [[SITE, "age", "weight_kg", LABEL], *body]


def _write(path: Path, delimiter: str) -> Path:
    text = "\n".join(delimiter.join(row) for row in _lines()) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["semi.csv", "semi.csv.gz"])
def test_a_semicolon_csv_is_read_by_its_header(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, ";")
    result = prepare_table(
        path, tmp_path / "out", site_column=SITE, label_column=LABEL, min_stays=10, seed=0
    )
    assert result.report.delimiter == ";"
    assert result.report.positive_label == "expired"
    assert set(result.report.numeric) == {"age", "weight_kg"}
    assert PreparedFolderSource(tmp_path / "out").site_ids() == ["site-hosp-a", "site-hosp-b"]


def test_a_wrong_delimiter_names_the_right_one(tmp_path: Path) -> None:
    path = _write(tmp_path / "semi.csv", ";")
    with pytest.raises(ConfigError, match=r"use --delimiter ';'"):
        prepare_table(
            path, tmp_path / "out", site_column=SITE, label_column=LABEL, min_stays=10, seed=0,
            delimiter=",",
        )  # fmt: skip


def test_the_header_decides_and_a_comma_header_stays_comma() -> None:
    assert detect_delimiter("a;b;c\n", ",") == ";"
    assert detect_delimiter("a,b;c,d\n", ",") == ","
    assert detect_delimiter("a\tb\n", ",") == "\t"
    assert detect_delimiter("only\n", ",") == ","


def test_prepare_says_the_delimiter_and_the_event_value(tmp_path: Path) -> None:
    path = _write(tmp_path / "semi.csv", ";")
    done = run_fedsilo(
        "data", "prepare", "--csv", str(path), "--site-column", SITE, "--label-column", LABEL,
        "--min-stays", "10", "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "label: outcome, event = 'expired' (detected)" in output
    assert "delimiter: ';' (read from the header)" in output
    given = run_fedsilo(
        "data", "prepare", "--csv", str(path), "--site-column", SITE, "--label-column", LABEL,
        "--min-stays", "10", "--out", str(tmp_path / "out2"), "--positive-label", "Alive",
        "--delimiter", ";", cwd=tmp_path,
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    output = given.stdout + given.stderr
    assert "event = 'alive' (given)" in output and "delimiter: ';' (given)" in output
