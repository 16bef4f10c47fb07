"""The Gaussian mechanism's parts as pure functions: clipping, noise, noise calibration.

Differential privacy holds only if every release is clipped to a known L2 norm (the
sensitivity) and noised with a standard deviation calibrated to it. Both sides of fedsilo
use the same few steps: DP-FedAvg at the aggregator clips each hospital's delta and noises
their sum; DP-SGD at a hospital has Opacus clip per-sample gradients, with a noise multiplier
derived here from the target epsilon. Keeping those steps here, as small functions with
keyword-only arguments, lets an auditor check each one against the paper in one place;
the aggregator and the hospital only wire them to their data.

The norm-bounded strategy reuses the clipping (bounding what one hostile hospital can move
is the same operation as bounding its sensitivity), without the noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from fl_core.errors import ConfigError
from fl_core.privacy.accountant import epsilon_for, noise_for_target, within_target

Float64 = npt.NDArray[np.float64]


# ---- clipping ------------------------------------------------------------------------------


def l2_norm(tensors: Iterable[npt.NDArray[np.generic]]) -> float:
    """The L2 norm of several tensors taken together as one flat vector, summed in float64."""
    total = 0.0
    for tensor in tensors:
        flat = np.asarray(tensor, np.float64).reshape(-1)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def delta_norm(
    *,
    update: Mapping[str, npt.NDArray[np.generic]],
    reference: Mapping[str, npt.NDArray[np.generic]],
) -> float:
    """L2 norm of ``update - reference`` over every tensor of ``reference``, in float64."""
    return l2_norm(
        np.asarray(update[name], np.float64) - np.asarray(start, np.float64)
        for name, start in reference.items()
    )


def clip_factor(*, norm: float, clip_norm: float) -> float:
    """The factor that brings a delta of L2 norm ``norm`` within ``clip_norm`` (1 if it is)."""
    if not clip_norm > 0:
        raise ConfigError(f"clip_norm must be > 0, got {clip_norm}; fix the config's clip_norm")
    return 1.0 if norm <= clip_norm else clip_norm / norm


# ---- noise ---------------------------------------------------------------------------------


def noise_std(*, noise_multiplier: float, clip_norm: float) -> float:
    """The Gaussian noise's standard deviation: the multiplier times the sensitivity."""
    return noise_multiplier * clip_norm


def noisy_mean(
    *, total: Float64, std: float, denominator: int, rng: np.random.Generator
) -> Float64:
    """``(total + N(0, std^2)) / denominator``: one noised tensor of a clipped sum.

    The denominator must not depend on who answered (DP-FedAvg divides by the number of
    invited sites), or the division itself would reveal whether a hospital took part.
    """
    if denominator < 1:
        raise ConfigError(f"the noised sum needs a denominator >= 1, got {denominator}")
    out: Float64 = (total + rng.normal(0.0, std, size=total.shape)) / denominator
    return out


# ---- calibration ---------------------------------------------------------------------------


def check_noise_keeps_target(
    *,
    what: str,
    noise_multiplier: float,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
) -> float:
    """Epsilon the noise spends over ``steps``; ``ConfigError`` when it exceeds the target."""
    spent = epsilon_for(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta
    )
    if not within_target(epsilon=spent, target_epsilon=target_epsilon):
        needed = noise_for_target(
            target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate, steps=steps
        )
        raise ConfigError(
            f"{what}: noise_multiplier {noise_multiplier} is too low to keep target epsilon "
            f"{target_epsilon} (delta {delta}) over {steps} steps: it spends {spent:.3g}; "
            f"use noise_multiplier >= {needed:.3g}, leave it out to derive it, or raise "
            "target_epsilon"
        )
    return spent


def calibrate_noise(
    *,
    what: str,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    delta: float,
    sample_rate: float,
    steps: int,
) -> float:
    """The noise multiplier to use: given and checked against the target, or derived from it."""
    if noise_multiplier is None:
        if target_epsilon is None:
            raise ConfigError(f"{what}: give noise_multiplier or target_epsilon (or both)")
        return noise_for_target(
            target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate, steps=steps
        )
    if target_epsilon is not None:
        check_noise_keeps_target(
            what=what,
            noise_multiplier=noise_multiplier,
            target_epsilon=target_epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=steps,
        )
    return noise_multiplier


def poisson_schedule(*, num_examples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """``(sample_rate, steps_per_round)`` of DP-SGD with Poisson sampling.

    Each step samples every row with probability ``1 / batches`` (the expected batch is
    ``batch_size``), and a round takes ``epochs * batches`` steps.
    """
    if num_examples < 1 or batch_size < 1 or epochs < 1:
        raise ConfigError(
            f"DP-SGD needs rows, batch size and epochs >= 1, got {num_examples}, "
            f"{batch_size} and {epochs}"
        )
    batches = -(-num_examples // batch_size)
    return 1.0 / batches, epochs * batches
