"""``fedsilo data evaluate`` keeps its result in --out and removes the folds' work unless asked."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from fedsilo.cli.data import EvaluationBars, run_data_command
from fedsilo.ops.evaluation_summary import (
    PAGE_FILE,
    SUMMARY_FILE,
    EvaluationSummary,
    FoldFigures,
    evaluation_html,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    twin, prepared = root / "twin", root / "prepared"
    assert (
        run_data_command(["synth", "--hospitals", "4", "--stays", "800", "--out", str(twin)]) == 0
    )
    assert run_data_command(["prepare", "--eicu-dir", str(twin), "--out", str(prepared)]) == 0
    config = root / "federation.yaml"
    config.write_text("rounds: 1\nsimulation:\n  workers: 1\n")
    return prepared, config


def _evaluate(prepared: tuple[Path, Path], out: Path, *extra: str) -> int:
    data, config = prepared
    args = ["evaluate", "--data", str(data), "--out", str(out), "--folds", "2"]
    return run_data_command([*args, "--config", str(config), "--no-local-only", *extra])


@pytest.mark.slow
def test_json_summary_and_page_are_kept_and_fold_data_removed(
    prepared: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _evaluate(prepared, tmp_path / "cv", "--json") == 0
    captured = capsys.readouterr()
    printed = EvaluationSummary.model_validate(json.loads(captured.out))
    kept = EvaluationSummary.model_validate_json((tmp_path / "cv" / SUMMARY_FILE).read_text())
    assert printed == kept
    assert kept.folds == 2 and len(kept.per_fold) == 2 and not kept.kept_work_folders
    assert kept.test_stays == sum(f.test_stays for f in kept.per_fold) > 0
    assert [m.model for m in kept.models][:2] == ["federated", "pooled"]
    assert kept.models[0].folds_scored == 2 and kept.models[0].out_of_fold_auroc is not None
    page = (tmp_path / "cv" / PAGE_FILE).read_text()
    assert "Cross-validation per hospital" in page and "r0-f1" in page
    assert sorted(p.name for p in (tmp_path / "cv").iterdir()) == [PAGE_FILE, SUMMARY_FILE]


@pytest.mark.slow
def test_keep_leaves_the_fold_and_run_folders(
    prepared: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _evaluate(prepared, tmp_path / "cv", "--keep") == 0
    shown = capsys.readouterr().out
    assert "2-fold cross-validation" in shown and SUMMARY_FILE in shown
    folders = {p.name for p in (tmp_path / "cv").iterdir()}
    assert {"folds_r0", "runs", SUMMARY_FILE, PAGE_FILE} <= folders
    assert sorted(p.name for p in (tmp_path / "cv" / "runs").iterdir()) == ["r0-f0", "r0-f1"]


def test_progress_bars_advance_with_every_round() -> None:
    """The whole bar has a size from the first fold on, so rich can give it an ETA."""
    progress = Progress(console=Console(file=io.StringIO()))
    bars = EvaluationBars(progress, federations=3)
    for fold in range(3):
        bars.federation_started(f"r0-f{fold}", steps=11)
        for round_index in range(1, 11):
            bars.advance(f"round {round_index} of 10 done")
        bars.advance("yardsticks done: pooled")
        running = [t for t in progress.tasks if t.id != bars.overall]
        assert len(running) == 1 and running[0].completed == running[0].total == 11
        assert running[0].description == f"fold r0-f{fold}: yardsticks done: pooled"
        bars.federation_finished(f"r0-f{fold}")
    whole = progress.tasks[0]
    assert whole.total == 33 and whole.completed == 33
    assert whole.description == "cross-validation: 3 of 3 folds done"
    assert len(progress.tasks) == 1  # each fold's bar is gone once it finished


def test_page_gives_the_per_hospital_view_of_each_fold() -> None:
    fold = FoldFigures(
        fold="r0-f0",
        test_stays=696,
        test_deaths=57,
        federated_auroc=0.8234,
        pooled_auroc=0.7994,
        seconds=148.0,
        hospitals=186,
        share_better_federated=0.559,
        hospitals_with_deaths=56,
        share_better_with_deaths=0.79,
        worst_decile_federated_brier=0.1959,
        worst_decile_local_brier=0.0890,
    )
    summary = EvaluationSummary(
        data="prepared",
        folds=1,
        repeats=1,
        rounds=10,
        local_only=True,
        test_stays=696,
        test_deaths=57,
        seconds=148.0,
        models=[],
        per_fold=[fold],
        kept_work_folders=False,
    )
    cells = re.findall(r"<td>(.*?)</td>", evaluation_html(summary))
    assert cells == [
        "r0-f0", "696", "57", "0.8234", "0.7994", "186", "55.9%", "79% of 56", "0.1959",
        "0.0890", "148",
    ]  # fmt: skip
