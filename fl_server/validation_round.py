"""What the aggregator does with the hospitals' summed validation reports.

Every answer may carry the global model's histogram and log-loss on the validation rows its
hospital holds out of training (``UpdateManifest.validation``; under secure aggregation they
arrive only as the masked sum). Summed, they decide two things no single hospital could:

- **early stopping**: a round's ``validation_loss`` is that of the model the round sent out;
  once it has not improved on the best for ``evaluation.early_stopping_patience`` rounds, the
  round's model is the last one trained and the next round is the final evaluation. Read from
  the rounds' ``result.json``, so a resumed aggregator decides the same. When the final model
  is recalibrated the loss followed is the one after a Platt scaling fitted on the same sums
  (``validation_loss_recalibrated``): the raw loss turns up as the risks spread while the
  ranking still improves, and the spread is what the recalibration removes
  (``docs/model-quality.md`` measures it);
- **the recalibration**: on the final round, Platt scaling fitted on the summed validation
  histogram of the final model (``fl_core.recalibration``), recorded with the test
  calibration before and after it; the published model carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fl_core.exchange.histograms import class_histogram
from fl_core.exchange.manifests import (
    EvaluationReport,
    Recalibration,
    RoundMetrics,
)
from fl_core.metrics import ClassHistogram
from fl_core.recalibration import fit_platt, rescaled_histogram, scaled_log_loss
from fl_core.secagg.masked_evaluation import MaskedEvaluationSum
from fl_server.round_metrics import calibration_figures


@dataclass(frozen=True)
class ValidationSum:
    """The summed validation reports of one global model."""

    histogram: ClassHistogram
    loss_sum: float

    @property
    def num_examples(self) -> int:
        return self.histogram.num_examples

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.num_examples if self.num_examples else None


def sum_reports(
    reports: Sequence[EvaluationReport], num_bins: int, masked: MaskedEvaluationSum | None
) -> ValidationSum:
    """Reports in the clear plus what went only into the masked sum (validation or test)."""
    histogram = ClassHistogram.empty(num_bins)
    loss_sum = 0.0
    for report in reports:
        histogram = histogram + class_histogram(report.histogram)
        loss_sum += report.loss_sum
    if masked is not None:
        histogram = histogram + masked.histogram
        loss_sum += masked.loss_sum
    return ValidationSum(histogram, loss_sum)


def with_validation(
    metrics: RoundMetrics | None, validation: ValidationSum, recalibrate: bool
) -> RoundMetrics | None:
    """The round's metrics with its validation losses beside them."""
    if metrics is None or validation.num_examples == 0:
        return metrics
    scaling = fit_platt(validation.histogram) if recalibrate else None
    return RoundMetrics.model_validate(
        {
            **metrics.model_dump(),
            "validation_loss": validation.mean_loss,
            "validation_examples": validation.num_examples,
            "validation_loss_recalibrated": None
            if scaling is None
            else scaled_log_loss(validation.histogram, scaling),
        }
    )


def stopping_loss(metrics: RoundMetrics | None) -> float | None:
    """The validation loss early stopping follows (``with_validation``)."""
    if metrics is None:
        return None
    if metrics.validation_loss_recalibrated is not None:
        return metrics.validation_loss_recalibrated
    return metrics.validation_loss


def stops_early(earlier: Sequence[float], current: RoundMetrics | None, patience: int) -> bool:
    """Whether training ends with this round: the summed validation loss of the models sent
    in the last ``patience`` rounds (this one included) is no better than an earlier best.
    ``earlier``: the losses of the training rounds before this one that have one
    (``RoundHistory.losses_before``), read from their ``result.json``, so a resumed aggregator
    decides the same.

    Rounds without a validation loss (no hospital held validation rows, or all withheld)
    count neither way; with none at all training runs every round.
    """
    current_loss = stopping_loss(current)
    if patience == 0 or current_loss is None:
        return False
    losses = [*earlier, current_loss]
    if len(losses) <= patience:
        return False
    best_before = min(losses[:-patience])
    return min(losses[-patience:]) >= best_before


def final_recalibration(
    validation: ValidationSum, test: ClassHistogram | None
) -> Recalibration | None:
    """The Platt scaling of the final model and the test calibration before and after it;
    None where the summed validation split fits none (``fit_platt``)."""
    scaling = fit_platt(validation.histogram)
    if scaling is None:
        return None
    return Recalibration(
        intercept=scaling.intercept,
        slope=scaling.slope,
        validation_examples=validation.num_examples,
        test_before=None if test is None else calibration_figures(test),
        test_after=None if test is None else calibration_figures(rescaled_histogram(test, scaling)),
    )
