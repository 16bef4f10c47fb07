"""Platt scaling fitted on summed histograms, and the model that carries it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_core.calibration import calibration_from_histogram
from fl_core.metrics import ClassHistogram, auroc_from_histogram, bin_centers, exact_auroc
from fl_core.models import TabularMLP, load_model_weights, model_weights
from fl_core.recalibration import (
    RISK_INTERCEPT,
    RISK_SLOPE,
    PlattScaling,
    fit_platt,
    rescaled_histogram,
    scaled_log_loss,
    with_scaling,
    without_scaling,
)

BINS = 2000


def over_confident(seed: int, stays: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Risks whose logit is twice the truth's, shifted: the true scaling is (-0.4, 0.5)."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-2.5, 2.0, stays)
    truth = 1 / (1 + np.exp(-(-0.4 + 0.5 * logit)))
    return 1 / (1 + np.exp(-logit)), (rng.random(stays) < truth).astype(np.int8)


def test_the_fit_on_a_histogram_finds_the_scaling_that_calibrates_other_stays() -> None:
    risk, labels = over_confident(0)
    scaling = fit_platt(ClassHistogram.from_scores(risk, labels, BINS))
    assert scaling is not None
    assert scaling.slope == pytest.approx(0.5, abs=0.05)
    assert scaling.intercept == pytest.approx(-0.4, abs=0.1)

    test = ClassHistogram.from_scores(*over_confident(1), BINS)
    before = calibration_from_histogram(test)
    after = calibration_from_histogram(rescaled_histogram(test, scaling))
    assert before is not None and after is not None
    assert before.slope is not None and before.slope < 0.6
    assert after.slope == pytest.approx(1.0, abs=0.07)
    assert after.intercept == pytest.approx(0.0, abs=0.1)
    assert after.brier < before.brier
    assert auroc_from_histogram(rescaled_histogram(test, scaling)) == pytest.approx(
        auroc_from_histogram(test), abs=2e-3
    )


def test_no_scaling_from_a_handful_of_deaths_or_a_reversed_fit() -> None:
    risk, labels = over_confident(2, stays=200)
    few = labels.copy()
    few[np.flatnonzero(few)[4:]] = 0  # four deaths left
    assert fit_platt(ClassHistogram.from_scores(risk, few, BINS)) is None
    reversed_risk = 1 - risk  # higher risk, fewer deaths: a negative slope is no calibration
    assert fit_platt(ClassHistogram.from_scores(reversed_risk, labels, BINS)) is None


def test_the_model_applies_its_scaling_and_keeps_the_order_of_patients() -> None:
    torch.manual_seed(0)
    model = TabularMLP(4, (8,))
    x = np.random.default_rng(3).normal(size=(64, 4)).astype(np.float32)
    weights = model_weights(model)
    assert float(weights[RISK_INTERCEPT][0]) == 0.0 and float(weights[RISK_SLOPE][0]) == 1.0
    model.eval()
    with torch.no_grad():
        before = model(torch.from_numpy(x)).numpy()
    scaling = PlattScaling(intercept=-0.3, slope=0.6)
    load_model_weights(model, with_scaling(weights, scaling))
    with torch.no_grad():
        after = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(after, -0.3 + 0.6 * before, rtol=1e-5, atol=1e-6)
    labels = (before > np.median(before)).astype(np.int8)
    assert exact_auroc(after, labels) == exact_auroc(before, labels)
    load_model_weights(model, without_scaling(model_weights(model)))
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), before, rtol=1e-6)


def test_scaling_a_scaled_model_composes() -> None:
    weights = model_weights(TabularMLP(2, (4,)))
    twice = with_scaling(with_scaling(weights, PlattScaling(0.5, 2.0)), PlattScaling(-1.0, 0.5))
    # -1 + 0.5 * (0.5 + 2 z) = -0.75 + z
    assert float(twice[RISK_INTERCEPT][0]) == pytest.approx(-0.75)
    assert float(twice[RISK_SLOPE][0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="risk_intercept"):
        with_scaling({"w": np.zeros(2, np.float32)}, PlattScaling(0.0, 1.0))


def test_the_scaled_log_loss_is_the_mean_log_loss_at_the_moved_bin_centres() -> None:
    risk, labels = over_confident(4, stays=3000)
    histogram = ClassHistogram.from_scores(risk, labels, BINS)
    centre = bin_centers(BINS)
    moved = 1 / (1 + np.exp(-(-0.4 + 0.5 * np.log(centre / (1 - centre)))))
    expected = (
        -(histogram.positives @ np.log(moved) + histogram.negatives @ np.log(1 - moved))
        / histogram.num_examples
    )
    found = scaled_log_loss(histogram, PlattScaling(-0.4, 0.5))
    assert found == pytest.approx(expected, rel=1e-9)
    assert found < scaled_log_loss(histogram, PlattScaling(0.0, 1.0))  # type: ignore[operator]
    assert scaled_log_loss(ClassHistogram.empty(BINS), PlattScaling(0.0, 1.0)) is None


def test_the_local_intercept_recovers_a_hospital_shift_and_shrinks_a_small_one() -> None:
    from fl_core.recalibration import local_intercept_shift

    rng = np.random.default_rng(11)
    logits = rng.normal(-2.5, 1.0, 40_000)
    labels = (rng.random(40_000) < 1 / (1 + np.exp(-(logits + 0.6)))).astype(np.int8)
    assert local_intercept_shift(logits, labels, prior_sd=1.0) == pytest.approx(0.6, abs=0.05)
    few = slice(0, 30)  # about three deaths: the prior holds the shift near zero
    small = local_intercept_shift(logits[few], labels[few], prior_sd=0.5)
    loose = local_intercept_shift(logits[few], labels[few], prior_sd=5.0)
    assert abs(small) < abs(loose)
    assert local_intercept_shift(np.array([]), np.array([], np.int8), prior_sd=0.5) == 0.0


def test_the_local_intercept_comes_back_from_saturated_risks() -> None:
    from fl_core.recalibration import local_intercept_shift

    logits = np.full(500, 16.0)  # a model that gives every stay a risk near 1
    labels = (np.arange(500) < 80).astype(np.int8)  # 16% died
    shift = local_intercept_shift(logits, labels, prior_sd=10.0)
    assert 1 / (1 + np.exp(-(16.0 + shift))) == pytest.approx(0.16, abs=0.01)
