"""Calibration figures from summed histograms equal scikit-learn's on the binned predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from fl_core.calibration import (
    ECE_BINS,
    brier_from_histogram,
    calibration_from_histogram,
    cox_calibration,
    ece_from_histogram,
)
from fl_core.metrics import ClassHistogram, bin_centers, bin_edges

BINS = 2000


def _binned(scores: np.ndarray) -> np.ndarray:
    """Each score replaced by its bin's centre: what the histogram knows of it."""
    return bin_centers(BINS)[np.searchsorted(bin_edges(BINS), scores, side="right")]


def _cohort(seed: int, n: int = 3000, miscalibration: float = 1.0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    logit = rng.normal(-2.5, 1.3, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    scores = 1 / (1 + np.exp(-(0.3 + miscalibration * logit)))  # a model with a wrong scale
    return scores, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brier_equals_scikit_learn_on_binned_predictions(seed: int) -> None:
    scores, y = _cohort(seed)
    histogram = ClassHistogram.from_scores(scores, y, BINS)
    expected = brier_score_loss(y, _binned(scores))
    assert brier_from_histogram(histogram) == pytest.approx(expected, rel=1e-12)
    # and the binning moves the figure far less than its sampling error
    assert brier_from_histogram(histogram) == pytest.approx(brier_score_loss(y, scores), abs=1e-4)


@pytest.mark.parametrize(("seed", "scale"), [(0, 1.0), (1, 1.6), (2, 0.6)])
def test_cox_intercept_and_slope_equal_unpenalised_logistic_regression(
    seed: int, scale: float
) -> None:
    scores, y = _cohort(seed, miscalibration=scale)
    binned = _binned(scores)
    x = np.log(binned / (1 - binned)).reshape(-1, 1)
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    fit = cox_calibration(ClassHistogram.from_scores(scores, y, BINS))
    assert fit is not None
    intercept, slope = fit
    assert intercept == pytest.approx(float(reference.intercept_[0]), abs=1e-5)
    assert slope == pytest.approx(float(reference.coef_[0, 0]), abs=1e-5)
    assert slope == pytest.approx(1 / scale, rel=0.25)  # it finds the distortion it was given


def test_ece_equals_the_definition_on_binned_predictions() -> None:
    scores, y = _cohort(4, miscalibration=1.5)
    binned = _binned(scores)
    coarse = np.minimum((binned * ECE_BINS).astype(int), ECE_BINS - 1)
    expected = sum(
        abs(binned[coarse == b].sum() - y[coarse == b].sum()) for b in range(ECE_BINS)
    ) / len(y)
    histogram = ClassHistogram.from_scores(scores, y, BINS)
    assert ece_from_histogram(histogram) == pytest.approx(expected, rel=1e-9)


def test_histograms_of_hospitals_sum_to_the_pooled_figures() -> None:
    scores, y = _cohort(5)
    whole = calibration_from_histogram(ClassHistogram.from_scores(scores, y, BINS))
    parts = [ClassHistogram.from_scores(scores[i::7], y[i::7], BINS) for i in range(7)]
    summed = sum(parts[1:], parts[0])
    assert calibration_from_histogram(summed) == whole


def test_undefined_fits_are_none_not_numbers() -> None:
    one_class = ClassHistogram.from_scores([0.1, 0.2, 0.3], [0, 0, 0], BINS)
    figures = calibration_from_histogram(one_class)
    assert figures is not None and figures.slope is None and figures.intercept is None
    assert figures.brier == pytest.approx(np.mean(_binned(np.array([0.1, 0.2, 0.3])) ** 2))
    separated = ClassHistogram.from_scores([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], BINS)
    assert cox_calibration(separated) is None
    assert calibration_from_histogram(ClassHistogram.empty(BINS)) is None
