"""``fedsilo data synth`` / ``prepare`` through ``data_app``; bad input exits 2 in one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsilo.cli.data import data_app, run_data_command
from fl_core.data.prepared import PreparedFolderSource
from fl_core.errors import ConfigError

runner = CliRunner()


def test_synth_then_prepare(tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    result = runner.invoke(
        data_app,
        ["synth", "--hospitals", "6", "--stays", "900", "--seed", "2", "--out", str(twin)],
    )
    assert result.exit_code == 0, result.output
    assert "in-hospital mortality" in result.output
    prepared = tmp_path / "prepared"
    result = runner.invoke(
        data_app, ["prepare", "--eicu-dir", str(twin), "--out", str(prepared), "--seed", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "sites written" in result.output and "cohort:" in result.output
    assert len(PreparedFolderSource(prepared).site_ids()) == 6
    again = runner.invoke(data_app, ["prepare", "--eicu-dir", str(twin), "--out", str(prepared)])
    assert isinstance(again.exception, ConfigError) and again.exception.exit_code == 2
    assert run_data_command(["prepare", "--eicu-dir", str(twin), "--out", str(prepared),
                             "--overwrite"]) == 0  # fmt: skip


def test_prepare_csv(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "site": ["a"] * 30 + ["b"] * 30,
            "x": range(60),
            "dead": ([0] * 25 + [1] * 5) * 2,
        }
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    args = ["prepare", "--csv", str(path), "--site-column", "site", "--label-column", "dead"]
    result = runner.invoke(data_app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert PreparedFolderSource(tmp_path / "out").site_ids() == ["site-a", "site-b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "--out", "o"], "exactly one of --eicu-dir"),
        (["prepare", "--out", "o", "--eicu-dir", "e", "--csv", "c"], "exactly one of"),
        (["prepare", "--out", "o", "--csv", "c.csv"], "--site-column COL and --label-column"),
        (["prepare", "--out", "o", "--eicu-dir", "e", "--site-column", "s"], "--csv only"),
        (["prepare", "--out", "o", "--eicu-dir", "missing-dir"], "not a folder"),
        (["synth", "--out", "o", "--hospitals", "0"], "--hospitals"),
        (["prepare", "--eicu-dir", "e"], "--out"),
    ],
)
def test_bad_input_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    args = [str(tmp_path / a) if a in ("o", "e", "c", "c.csv", "missing-dir") else a for a in args]
    assert run_data_command(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 3


@pytest.mark.slow
def test_evaluate_cross_validates_beside_pooled_and_yardsticks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    twin, prepared = tmp_path / "twin", tmp_path / "prepared"
    assert (
        run_data_command(["synth", "--hospitals", "4", "--stays", "800", "--out", str(twin)]) == 0
    )
    assert run_data_command(["prepare", "--eicu-dir", str(twin), "--out", str(prepared)]) == 0
    config = tmp_path / "federation.yaml"
    config.write_text("rounds: 1\nsimulation:\n  workers: 1\n")
    capsys.readouterr()
    code = run_data_command(
        [
            "evaluate",
            "--data",
            str(prepared),
            "--out",
            str(tmp_path / "cv"),
            "--folds",
            "2",
            "--config",
            str(config),
        ]
    )
    assert code == 0
    shown = capsys.readouterr().out
    for name in ("federated", "pooled", "apache", "bayes"):
        assert name in shown
    assert "2-fold cross-validation" in shown
    assert run_data_command(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
