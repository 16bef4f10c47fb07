"""metrics.jsonl lines read and write through ``MetricsRow``, old folders included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsilo.engine.metrics_row import MetricsRow, read_metrics, write_metrics
from fl_core.errors import ConfigError

FIRST_ROW = {  # a line as the first metrics rows were written: no calibration, no validation
    "round": 1,
    "auroc": 0.81,
    "auprc": 0.42,
    "loss": 0.31,
    "train_loss": 0.35,
    "sites_accepted": 3,
    "sites_rejected": 1,
    "sites_missing": 0,
    "seconds": 0.216,
    "reference_auroc": {"apache": 0.86, "bayes": None},
    "eval_sites": 3,
}
CALIBRATED = {"brier": 0.094, "ece": 0.055, "intercept": 2.18, "slope": 1.73}
COUNTS = {key: FIRST_ROW[key] for key in list(FIRST_ROW)[:9]}  # round to seconds
TODAY_ROW = {  # a line as finish_run writes it now, keys in its order
    **COUNTS,
    "round": 2,
    "reference_auroc": {"apache": 0.86, "bayes": None},
    "calibration": CALIBRATED,
    "reference_calibration": {"apache": {**CALIBRATED, "slope": 1.16}},
    "eval_sites": 3,
    "validation_loss": 0.29,
    "recalibration": {
        "intercept": -0.1,
        "slope": 0.7,
        "validation_examples": 500,
        "test_before": CALIBRATED,
        "test_after": None,
    },
}


def test_a_row_written_before_calibration_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(FIRST_ROW) + "\n\n")
    (row,) = read_metrics(path)
    assert row.round == 1 and row.auroc == 0.81 and row.sites_rejected == 1
    assert row.reference_auroc == {"apache": 0.86, "bayes": None}
    assert row.calibration is None and row.reference_calibration == {}
    assert row.validation_loss is None and row.recalibration is None


def test_todays_lines_are_written_back_byte_for_byte(tmp_path: Path) -> None:
    lines = [json.dumps(TODAY_ROW) + "\n", json.dumps({**TODAY_ROW, "round": 3}) + "\n"]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(lines))
    rows = read_metrics(source)
    assert rows[0].recalibration is not None and rows[0].recalibration.slope == 0.7
    again = tmp_path / "out.jsonl"
    write_metrics(again, rows)
    assert again.read_text() == "".join(lines)


def test_a_field_the_row_does_not_have_is_refused() -> None:
    with pytest.raises(ValueError, match="auc"):
        MetricsRow.model_validate({**FIRST_ROW, "auc": 0.9})


def test_a_line_that_is_no_row_names_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(FIRST_ROW) + "\n" + json.dumps({"round": 2}) + "\n")
    with pytest.raises(ConfigError, match=r"metrics\.jsonl:2 is not a metrics row") as raised:
        read_metrics(path)
    assert "\n" not in str(raised.value)
