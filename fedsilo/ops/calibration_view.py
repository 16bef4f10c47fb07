"""The final model's calibration beside its yardsticks', for the simulate table and the report.

A mortality model is read as a probability, so the last round's AUROC is shown with its Brier
score, expected calibration error and Cox intercept and slope (``fl_core.calibration``), all
from the summed test histograms, next to APACHE IVa's (and, on the twin, the true risk's) on
the same stays. Read from the metrics rows, so that a finished run's folder shows the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.table import Table

from fedsilo.engine.metrics_row import MetricsRow

HEADERS = ["model", "AUROC", "Brier", "ECE", "intercept (0)", "slope (1)"]
MODEL = "federated (final)"
RECALIBRATED = "federated (final, recalibrated)"
BEFORE = "federated before recalibration"


def calibration_cells(rows: Sequence[MetricsRow]) -> list[list[str]]:
    """One line per model of the last evaluated round; empty when it carries no calibration."""
    last = rows[-1] if rows else None
    if last is None or last.calibration is None:
        return []
    calibration = last.calibration
    named = [(MODEL, last.auroc, calibration)]
    after = last.recalibration.test_after if last.recalibration else None
    if after is not None:  # the published model carries the scaling; hospitals scored without
        named = [(RECALIBRATED, last.auroc, after), (BEFORE, last.auroc, calibration)]
    named += [
        (name, last.reference_auroc.get(name), figures)
        for name, figures in sorted(last.reference_calibration.items())
    ]
    return [
        [
            name,
            _fmt(auroc),
            _fmt(figures.brier),
            _fmt(figures.ece),
            _fmt(figures.intercept, 3),
            _fmt(figures.slope, 3),
        ]
        for name, auroc, figures in named
    ]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def calibration_table(rows: Sequence[MetricsRow]) -> Table | None:
    cells = calibration_cells(rows)
    if not cells:
        return None
    table = Table(
        title="final model on the test stays, beside the yardsticks",
        caption="calibrated: Brier and ECE low, intercept 0, slope 1 (under 1: risks too extreme)",
    )
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "model" else "right")
    for line in cells:
        table.add_row(*line)
    return table


def calibration_html(
    rows: Sequence[MetricsRow], table: Callable[[list[str], list[list[str]], set[int]], str]
) -> str:
    """The same lines as an HTML table (``table`` is the report's escaping table writer)."""
    cells = calibration_cells(rows)
    if not cells:
        return "<p>This run's results carry no calibration figures.</p>"
    return table(HEADERS, cells, {0})
