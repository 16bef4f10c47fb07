"""``fedsilo data evaluate`` keeps its result in --out and removes the folds' work unless asked."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from rich.progress import Progress

from fedsilo.cli.data import EvaluationBars, run_data_command
from fedsilo.ops.evaluate import OWN_INTERCEPT, STAYS_FILE
from fedsilo.ops.evaluation_summary import (
    PAGE_FILE,
    SUMMARY_FILE,
    EvaluationSummary,
    FoldFigures,
    HospitalRow,
    HospitalVerdicts,
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
    names = [m.model for m in kept.models][:3]
    assert names == ["federated", "federated, before recalibration", "pooled"]
    assert kept.models[0].folds_scored == 2 and kept.models[0].out_of_fold_auroc is not None
    # like for like: the federated model on the stays APACHE scores, and APACHE on its own
    apache = next(m for m in kept.models if m.model == "apache")
    assert apache.auroc_on_apache_stays == apache.auroc_mean is not None
    assert kept.models[0].auroc_on_apache_stays is not None
    assert kept.models[2].auroc_on_apache_stays is None  # pooled: no like-for-like figure
    page = (tmp_path / "cv" / PAGE_FILE).read_text()
    assert "Cross-validation per hospital" in page and "r0-f1" in page
    kept_files = sorted(p.name for p in (tmp_path / "cv").iterdir())
    assert kept_files == [PAGE_FILE, STAYS_FILE, SUMMARY_FILE]


@pytest.mark.slow
def test_local_intercept_gets_a_row_whose_risks_shift_each_hospital_by_one_log_odds(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = prepared
    config = tmp_path / "personalised.yaml"
    config.write_text(
        "rounds: 1\nsimulation:\n  workers: 1\npersonalisation:\n  local_intercept: true\n"
    )
    args = ["evaluate", "--data", str(data), "--out", str(tmp_path / "cv"), "--folds", "2"]
    assert run_data_command([*args, "--config", str(config), "--no-local-only"]) == 0
    kept = EvaluationSummary.model_validate_json((tmp_path / "cv" / SUMMARY_FILE).read_text())
    names = [m.model for m in kept.models][:4]
    assert names == [
        "federated",
        "federated, before recalibration",
        "federated, each hospital's own intercept",
        "pooled",
    ]
    own = kept.models[2]
    assert own.folds_scored == 2 and own.out_of_fold_auroc is not None
    assert own.auroc_on_apache_stays is not None and own.slope is not None
    stays = pq.read_table(tmp_path / "cv" / STAYS_FILE).to_pandas()

    def logit(p: np.ndarray) -> np.ndarray:
        return np.log(p) - np.log1p(-p)

    shifts = stays.assign(
        shift=logit(stays[OWN_INTERCEPT].to_numpy()) - logit(stays["federated"].to_numpy())
    ).groupby(["fold", "site"])["shift"]
    assert (shifts.max() - shifts.min()).max() < 1e-3  # one shift for a hospital's stays
    assert shifts.mean().abs().max() > 0.01  # and the hospitals' rows moved it


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


def test_page_gives_each_evaluable_hospital_its_verdict() -> None:
    fold = FoldFigures(
        fold="r0-f0",
        test_stays=696,
        test_deaths=57,
        federated_auroc=0.8234,
        pooled_auroc=0.7994,
        seconds=148.0,
        hospitals=None,
        share_better_federated=None,
    )
    judged = HospitalRow(
        site_id="site-7",
        stays=14,
        deaths=3,
        federated_log_loss=0.412,
        own_log_loss=0.905,
        apache_log_loss=0.388,
        federated_brier=0.12,
        own_brier=0.15,
        apache_brier=0.11,
        log_loss_difference=(-0.493, -1.2, 0.214),
        brier_difference=(-0.03, -0.09, 0.03),
        verdict="not worse",
        observed_expected=1.1,
    )
    unjudged = HospitalRow(
        site_id="site-9",
        stays=9,
        deaths=0,
        federated_log_loss=0.1,
        own_log_loss=0.01,
        apache_log_loss=None,
        federated_brier=0.02,
        own_brier=0.0,
        apache_brier=None,
        log_loss_difference=None,
        brier_difference=None,
        verdict="not evaluable: 0 death(s), 9 survivor(s) (needs 2 of each)",
        observed_expected=0.0,
    )
    verdicts = HospitalVerdicts(
        min_events=2,
        hospitals=2,
        evaluable=1,
        not_worse_share=1.0,
        better_share=1.0,
        brier_not_worse_share=1.0,
        rows=[unjudged, judged],
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
        hospital_verdicts=verdicts,
    )
    page = evaluation_html(summary)
    cells = re.findall(r"<td>(.*?)</td>", page)
    assert cells == [
        "r0-f0", "696", "57", "0.8234", "0.7994", "148",
        "site-7", "14", "3", "0.412", "0.905", "0.388", "-0.493 (-1.200 to +0.214)",
        "-0.030 (-0.090 to +0.030)", "not worse",
    ]  # fmt: skip
    assert "1 of 2 hospitals evaluable" in page and "not worse" in page
    assert "site-9" not in page  # not evaluable: not listed, not counted
