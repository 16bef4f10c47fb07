"""The final model's calibration beside its yardsticks', for the simulate table and the report.

A mortality model is read as a probability, so the last round's AUROC is shown with its Brier
score, expected calibration error and Cox intercept and slope (``fl_core.calibration``), all
from the summed test histograms, next to APACHE IVa's (and, on the twin, the true risk's) on
the same stays. Read from the metrics rows, so that a finished run's folder shows the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

HEADERS = ["model", "AUROC", "Brier", "ECE", "intercept (0)", "slope (1)"]
MODEL = "federated (final)"
RECALIBRATED = "federated (final, recalibrated)"
BEFORE = "federated before recalibration"


def calibration_cells(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One line per model of the last evaluated round; empty when it carries no calibration."""
    if not rows or not rows[-1].get("calibration"):
        return []
    last = rows[-1]
    named = [(MODEL, last.get("auroc"), last["calibration"])]
    after = (last.get("recalibration") or {}).get("test_after")
    if after:  # the published model carries the scaling; the hospitals scored it without
        named = [(RECALIBRATED, last.get("auroc"), after), (BEFORE, *named[0][1:])]
    references = last.get("reference_calibration") or {}
    named += [
        (name, (last.get("reference_auroc") or {}).get(name), figures)
        for name, figures in sorted(references.items())
    ]
    return [
        [
            name,
            _fmt(auroc),
            _fmt(figures.get("brier")),
            _fmt(figures.get("ece")),
            _fmt(figures.get("intercept"), 3),
            _fmt(figures.get("slope"), 3),
        ]
        for name, auroc, figures in named
    ]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def calibration_table(rows: Sequence[dict[str, Any]]) -> Table | None:
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
    rows: Sequence[dict[str, Any]], table: Callable[[list[str], list[list[str]], set[int]], str]
) -> str:
    """The same lines as an HTML table (``table`` is the report's escaping table writer)."""
    cells = calibration_cells(rows)
    if not cells:
        return "<p>This run's results carry no calibration figures.</p>"
    return table(HEADERS, cells, {0})
