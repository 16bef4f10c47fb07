"""The final model's calibration line shows the recalibrated model the run published."""

from __future__ import annotations

from fedsilo.engine.metrics_row import MetricsRow
from fedsilo.ops.calibration_view import BEFORE, MODEL, RECALIBRATED, calibration_cells

BEFORE_FIGURES = {"brier": 0.071, "ece": 0.03, "intercept": -0.2, "slope": 0.66}
AFTER_FIGURES = {"brier": 0.066, "ece": 0.01, "intercept": 0.02, "slope": 1.01}


def row(**extra: object) -> MetricsRow:
    counts = {"sites_accepted": 3, "sites_rejected": 0, "sites_missing": 0, "seconds": 1.0}
    scores = {"auroc": 0.84, "auprc": 0.4, "loss": 0.3, "train_loss": 0.31}
    return MetricsRow.model_validate(
        {"round": 10, **scores, **counts, "calibration": BEFORE_FIGURES, **extra}
    )


def test_a_recalibrated_run_shows_the_published_model_first_and_the_model_before_it() -> None:
    recalibration = {
        "intercept": -0.1,
        "slope": 0.7,
        "validation_examples": 500,
        "test_after": AFTER_FIGURES,
    }
    cells = calibration_cells([row(recalibration=recalibration)])
    assert cells == [
        [RECALIBRATED, "0.8400", "0.0660", "0.0100", "0.020", "1.010"],
        [BEFORE, "0.8400", "0.0710", "0.0300", "-0.200", "0.660"],
    ]


def test_without_a_recalibration_the_final_model_is_shown_as_scored() -> None:
    for extra in ({}, {"recalibration": None}):
        assert calibration_cells([row(**extra)]) == [
            [MODEL, "0.8400", "0.0710", "0.0300", "-0.200", "0.660"]
        ]
