"""Platt scaling of the final model, fitted on the hospitals' summed validation histograms.

A federation of small hospitals over-fits them: its risks come out too spread (calibration
slope well under 1). The cure is the one a single-centre model gets: refit the outcome on the
model's logit, ``logit P(death) = a + b logit(risk)``, on stays the model did not train on.
Here those are the validation rows every hospital holds out of its training split, and the
fit needs no patient's prediction: it is Cox's calibration fit (``fl_core.calibration``) on
the summed per-class histogram of their risks, each stay at its bin's centre.

The fitted pair is stored in the published model (``TabularMLP.risk_intercept`` and
``risk_slope``, applied in its forward pass), so every consumer reads calibrated risks. With
``b > 0`` the map is increasing: no two patients swap order and the AUROC does not move. A fit
with ``b <= 0``, or none at all (one class, separation), leaves the model as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fl_core.calibration import cox_calibration
from fl_core.metrics import ClassHistogram, bin_centers, bin_edges
from fl_core.types import Weights

RISK_INTERCEPT = "risk_intercept"
RISK_SLOPE = "risk_slope"
"""The model tensors (shape (1,)) that carry the Platt scaling; identity is 0 and 1."""

MAX_ROOT_STEPS = 200
"""Far more than the bracketed root needs (Newton's steps converge in under ten; halving a
bracket of width w to 1e-12 takes log2(w / 1e-12) steps)."""

MIN_VALIDATION_EVENTS = 5
"""Fewer deaths (or survivors) in the summed validation split fit no scaling: two parameters
from a handful of events would move every risk on noise."""


@dataclass(frozen=True)
class PlattScaling:
    """``risk = sigmoid(intercept + slope * logit(model risk))``."""

    intercept: float
    slope: float


def fit_platt(validation: ClassHistogram) -> PlattScaling | None:
    """The scaling fitted on summed validation histograms; None where none is fit to use."""
    events = int(validation.positives.sum())
    survivors = int(validation.negatives.sum())
    if min(events, survivors) < MIN_VALIDATION_EVENTS:
        return None
    fit = cox_calibration(validation)
    if fit is None or not np.isfinite(fit).all() or fit[1] <= 0:
        return None
    return PlattScaling(intercept=fit[0], slope=fit[1])


def rescaled_histogram(histogram: ClassHistogram, scaling: PlattScaling) -> ClassHistogram:
    """The histogram the scaled model would give: each bin's centre moved by the scaling and
    binned again (how the aggregator reports test calibration after, from the same sums)."""
    num_bins = histogram.positives.shape[0]
    centre = bin_centers(num_bins)
    moved = scaling.intercept + scaling.slope * (np.log(centre) - np.log1p(-centre))
    target = np.searchsorted(bin_edges(num_bins), 1.0 / (1.0 + np.exp(-moved)), side="right")
    return ClassHistogram(
        positives=np.bincount(target, weights=histogram.positives, minlength=num_bins).astype(
            np.int64
        ),
        negatives=np.bincount(target, weights=histogram.negatives, minlength=num_bins).astype(
            np.int64
        ),
    )


def scaled_log_loss(histogram: ClassHistogram, scaling: PlattScaling) -> float | None:
    """Mean log-loss of the stays of ``histogram`` once scaled, each at its bin's centre."""
    total = histogram.num_examples
    if total == 0:
        return None
    centre = bin_centers(histogram.positives.shape[0])
    logit = scaling.intercept + scaling.slope * (np.log(centre) - np.log1p(-centre))
    # log(sigmoid(z)) = -log1p(exp(-z)), computed stably for either sign of z
    log_risk = -np.logaddexp(0.0, -logit)
    log_survival = -np.logaddexp(0.0, logit)
    summed = histogram.positives @ log_risk + histogram.negatives @ log_survival
    return float(-summed / total)


def local_intercept_shift(
    logits: npt.NDArray[np.float64], labels: npt.NDArray[np.integer], prior_sd: float
) -> float:
    """The log-odds shift that fits one hospital's rows best under a N(0, prior_sd^2) prior.

    The root of the gradient ``sum(y - sigmoid(logit + b)) - b / prior_sd^2``, which falls as
    ``b`` rises, so the root is unique and lies in ``prior_sd^2 * [deaths - rows, deaths]``.
    Newton's steps inside that bracket, halving it where a step would leave it: Newton alone
    overshoots wildly from saturated risks (a model that gives every stay a risk near 1). A
    hospital with no rows gets 0; one with few deaths moves little.
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    variance = prior_sd * prior_sd
    low, high = variance * (float(y.sum()) - y.size), variance * float(y.sum())
    shift = min(max(0.0, low), high)
    for _ in range(MAX_ROOT_STEPS):
        risk = 0.5 * (1.0 + np.tanh(0.5 * (z + shift)))  # the sigmoid, without overflow
        gradient = float(np.sum(y - risk)) - shift / variance
        if gradient > 0:
            low = shift
        else:
            high = shift
        newton = shift + gradient / (float(np.sum(risk * (1.0 - risk))) + 1.0 / variance)
        following = newton if low < newton < high else (low + high) / 2
        if abs(following - shift) < 1e-12 or high - low < 1e-12:
            return following
        shift = following
    return shift


def carries_scaling(weights: Weights) -> bool:
    """Whether a model's tensors have the scaling slots (an app's own model may not)."""
    return RISK_INTERCEPT in weights and RISK_SLOPE in weights


def with_scaling(weights: Weights, scaling: PlattScaling) -> Weights:
    """The model with ``scaling`` applied after any scaling it already carries.

    Composed, not replaced: ``a + b (a0 + b0 z)``, so scaling a scaled model is still right.
    """
    if not carries_scaling(weights):
        raise ValueError(f"the model has no {RISK_INTERCEPT}/{RISK_SLOPE} tensors to scale")
    intercept0 = np.asarray(weights[RISK_INTERCEPT], np.float64)
    slope0 = np.asarray(weights[RISK_SLOPE], np.float64)
    dtype = weights[RISK_SLOPE].dtype
    scaled = dict(weights)
    scaled[RISK_INTERCEPT] = (scaling.intercept + scaling.slope * intercept0).astype(dtype)
    scaled[RISK_SLOPE] = (scaling.slope * slope0).astype(dtype)
    return scaled


def without_scaling(weights: Weights) -> Weights:
    """The model with identity scaling: its risks before recalibration."""
    if not carries_scaling(weights):
        return dict(weights)
    unscaled = dict(weights)
    unscaled[RISK_INTERCEPT] = np.zeros_like(weights[RISK_INTERCEPT])
    unscaled[RISK_SLOPE] = np.ones_like(weights[RISK_SLOPE])
    return unscaled
