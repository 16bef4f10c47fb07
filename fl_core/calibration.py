"""Calibration of a risk model from the hospitals' summed score histograms.

A mortality model is read as a probability: a ward that is told "12 %" should see about 12 of
100 such patients die. Ranking metrics (AUROC) say nothing about that, so every evaluation also
reports, from the same histograms that give the AUROC (no per-patient prediction leaves a
hospital):

- the Brier score, the mean squared error of the predicted risk;
- the calibration intercept and slope of Cox (1958): the logistic regression of the outcome on
  the logit of the predicted risk. A calibrated model has intercept 0 and slope 1; a slope
  under 1 means risks too extreme (over-fitted), an intercept above 0 with slope 1 means risks
  too low on the whole;
- the expected calibration error: the stays-weighted mean gap between the mean predicted risk
  and the observed rate over ``ECE_BINS`` equal-width bins of risk.

Every figure treats each stay as predicted at its bin's centre, so it equals scikit-learn's on
those predictions (the tests check it); the bins are fine (``EvaluationConfig.histogram_bins``),
so the binning error is far below a figure's sampling error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fl_core.metrics import ClassHistogram, bin_centers

ECE_BINS = 10
_NEWTON_STEPS = 50
_NEWTON_TOLERANCE = 1e-10


@dataclass(frozen=True)
class Calibration:
    """Brier score, Cox intercept and slope, and expected calibration error of one model."""

    brier: float
    intercept: float | None
    """None where the fit does not exist (one class, one distinct risk, or separation)."""
    slope: float | None
    ece: float


def _counts(histogram: ClassHistogram) -> tuple[npt.NDArray[np.float64], ...]:
    return histogram.positives.astype(np.float64), histogram.negatives.astype(np.float64)


def brier_from_histogram(histogram: ClassHistogram) -> float | None:
    """Mean of (risk - outcome)^2 over the stays, each at its bin's centre risk."""
    positives, negatives = _counts(histogram)
    total = positives.sum() + negatives.sum()
    if total == 0:
        return None
    risk = bin_centers(positives.shape[0])
    return float((positives @ (1.0 - risk) ** 2 + negatives @ risk**2) / total)


def ece_from_histogram(histogram: ClassHistogram, num_bins: int = ECE_BINS) -> float | None:
    """Stays-weighted mean |mean risk - observed rate| over equal-width bins of risk."""
    positives, negatives = _counts(histogram)
    total = positives.sum() + negatives.sum()
    if total == 0:
        return None
    risk = bin_centers(positives.shape[0])
    coarse = np.minimum((risk * num_bins).astype(np.int64), num_bins - 1)
    deaths = np.bincount(coarse, weights=positives, minlength=num_bins)
    predicted = np.bincount(coarse, weights=(positives + negatives) * risk, minlength=num_bins)
    return float(np.abs(predicted - deaths).sum() / total)


def cox_calibration(histogram: ClassHistogram) -> tuple[float, float] | None:
    """Intercept and slope of logit P(death) = a + b logit(risk), by Newton's method.

    Fitted on the occupied bins with their counts as weights (the maximum likelihood fit on
    the stays). None when no finite fit exists: one class, all stays in one bin, or the
    classes separated by risk (the likelihood then grows without bound).
    """
    positives, negatives = _counts(histogram)
    occupied = (positives + negatives) > 0
    if positives.sum() == 0 or negatives.sum() == 0 or occupied.sum() < 2:
        return None
    risk = bin_centers(positives.shape[0])[occupied]
    x = np.log(risk) - np.log1p(-risk)
    pos, neg = positives[occupied], negatives[occupied]
    weight = pos + neg
    design = np.column_stack([np.ones_like(x), x])
    coef = np.array([np.log(pos.sum() / neg.sum()), 0.0])
    for _ in range(_NEWTON_STEPS):
        fitted = 1.0 / (1.0 + np.exp(-(design @ coef)))
        gradient = design.T @ (pos - weight * fitted)
        curvature = (design * (weight * fitted * (1.0 - fitted))[:, None]).T @ design
        try:
            step = np.linalg.solve(curvature, gradient)
        except np.linalg.LinAlgError:
            return None
        coef = coef + step
        if not np.all(np.isfinite(coef)):
            return None
        if float(np.abs(step).max()) < _NEWTON_TOLERANCE:
            return float(coef[0]), float(coef[1])
    return None  # no convergence: separated classes drive the slope to infinity


def calibration_from_histogram(histogram: ClassHistogram) -> Calibration | None:
    """Every calibration figure of one model; None for a histogram with no stays."""
    brier = brier_from_histogram(histogram)
    ece = ece_from_histogram(histogram)
    if brier is None or ece is None:
        return None
    fit = cox_calibration(histogram)
    return Calibration(
        brier=brier,
        intercept=None if fit is None else fit[0],
        slope=None if fit is None else fit[1],
        ece=ece,
    )
