"""The pooled figures of a round from the hospitals' histograms: the round's evaluation maths.

A hospital sends class histograms of its risks, never a risk per patient; summing them gives
the federation's AUROC, AUPRC, loss and calibration exactly as if the stays were pooled.
"""

from __future__ import annotations

from collections.abc import Sequence

from fl_core.calibration import calibration_from_histogram
from fl_core.errors import UpdateRejectedError
from fl_core.exchange.histograms import class_histogram
from fl_core.exchange.manifests import CalibrationFigures, EvaluationReport, RoundMetrics
from fl_core.metrics import ClassHistogram, auprc_from_histogram, auroc_from_histogram
from fl_core.secagg.masked_evaluation import MaskedEvaluationSum


def summarise_evaluations(
    reports: Sequence[EvaluationReport],
    num_bins: int,
    masked: MaskedEvaluationSum | None = None,
) -> RoundMetrics | None:
    """Pooled metrics of one global model from the hospitals' histograms, and from the sum
    of those that went only into the secure aggregation sum (``masked``)."""
    if not reports and masked is None:
        return None
    model = ClassHistogram.empty(num_bins)
    references: dict[str, ClassHistogram] = {}
    loss_sum, count = 0.0, 0
    for report in reports:
        check_bins(report, num_bins)
        model = model + class_histogram(report.histogram)
        loss_sum += report.loss_sum
        count += report.num_examples
        for name, hist in report.reference.items():
            found = references.get(name, ClassHistogram.empty(num_bins))
            references[name] = found + class_histogram(hist)
    if masked is not None:
        model = model + masked.histogram
        loss_sum += masked.loss_sum
        count += masked.num_examples
    reference_calibration = {name: calibration_figures(h) for name, h in sorted(references.items())}
    return RoundMetrics(
        num_examples=count,
        num_sites=len(reports) + (masked.num_sites if masked else 0),
        masked_sites=masked.num_sites if masked else 0,
        auroc=auroc_from_histogram(model),
        auprc=auprc_from_histogram(model),
        loss=loss_sum / count if count else None,
        reference_auroc={name: auroc_from_histogram(h) for name, h in sorted(references.items())},
        calibration=calibration_figures(model),
        reference_calibration={k: v for k, v in reference_calibration.items() if v is not None},
    )


def calibration_figures(histogram: ClassHistogram) -> CalibrationFigures | None:
    """The calibration document of one summed histogram (None: no stays in it)."""
    figures = calibration_from_histogram(histogram)
    if figures is None:
        return None
    return CalibrationFigures(
        brier=figures.brier, ece=figures.ece, intercept=figures.intercept, slope=figures.slope
    )


def check_bins(report: EvaluationReport, num_bins: int) -> None:
    """Every histogram the round sums must have the configured bins; raises at admission.

    The reference histograms are checked too: summed at close, one of the wrong length would
    otherwise fail the round after its hospital was accepted.
    """
    named = [("histogram", report.histogram)]
    named += [(f"reference {name!r} histogram", hist) for name, hist in report.reference.items()]
    for what, hist in named:
        if hist.bins != num_bins:
            raise UpdateRejectedError(
                "malformed_manifest", f"{what} has {hist.bins} bins, expected {num_bins}"
            )
