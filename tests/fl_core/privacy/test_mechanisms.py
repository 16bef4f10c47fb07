"""Property tests of the Gaussian mechanism's parts (``fl_core.privacy.mechanisms``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl_core.errors import ConfigError
from fl_core.privacy import (
    calibrate_noise,
    clip_factor,
    delta_norm,
    epsilon_for,
    l2_norm,
    noisy_mean,
    poisson_schedule,
)

SETTINGS = settings(max_examples=60, deadline=None)
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
tensors = arrays(np.float64, st.integers(1, 8), elements=finite)


@SETTINGS
@given(parts=st.lists(tensors, min_size=1, max_size=4), data=st.data())
def test_l2_norm_is_the_flat_vector_norm_in_any_tensor_order(parts, data):
    order = data.draw(st.permutations(range(len(parts))))
    flat = np.concatenate([p.reshape(-1) for p in parts])
    assert math.isclose(l2_norm(parts), float(np.linalg.norm(flat)), rel_tol=1e-12, abs_tol=1e-9)
    assert math.isclose(
        l2_norm([parts[i] for i in order]), l2_norm(parts), rel_tol=1e-12, abs_tol=1e-9
    )


@SETTINGS
@given(x=arrays(np.float64, 5, elements=finite))
def test_identical_update_has_no_delta(x):
    assert delta_norm(update={"w": x}, reference={"w": x.copy()}) == 0.0


@SETTINGS
@given(delta=arrays(np.float64, 6, elements=finite), clip=st.floats(1e-3, 1e3))
def test_a_clipped_delta_is_within_clip_norm_and_a_small_one_is_untouched(delta, clip):
    norm = l2_norm([delta])
    factor = clip_factor(norm=norm, clip_norm=clip)
    assert 0.0 < factor <= 1.0
    assert l2_norm([delta * factor]) <= clip * (1 + 1e-12)
    if norm <= clip:
        assert factor == 1.0


def test_clip_norm_must_be_positive():
    with pytest.raises(ConfigError, match="clip_norm"):
        clip_factor(norm=1.0, clip_norm=0.0)


@SETTINGS
@given(total=arrays(np.float64, 4, elements=finite), n=st.integers(1, 50))
def test_without_noise_the_noisy_mean_is_the_mean(total, n):
    rng = np.random.Generator(np.random.PCG64(0))
    np.testing.assert_allclose(noisy_mean(total=total, std=0.0, denominator=n, rng=rng), total / n)


def test_noise_has_the_asked_standard_deviation():
    rng = np.random.Generator(np.random.PCG64(7))
    out = noisy_mean(total=np.zeros(200_000), std=2.5, denominator=5, rng=rng)
    assert abs(out.std() - 0.5) < 0.01


@settings(max_examples=8, deadline=None)
@given(target=st.floats(0.5, 8.0), rate=st.floats(0.01, 1.0), steps=st.integers(1, 200))
def test_derived_noise_keeps_the_target(target, rate, steps):
    noise = calibrate_noise(
        what="test", noise_multiplier=None, target_epsilon=target, delta=1e-5,
        sample_rate=rate, steps=steps,
    )  # fmt: skip
    spent = epsilon_for(noise_multiplier=noise, sample_rate=rate, steps=steps, delta=1e-5)
    assert spent <= target * (1 + 1e-6)


def test_a_given_noise_too_low_for_the_target_is_refused_with_the_needed_one():
    with pytest.raises(ConfigError, match="use noise_multiplier >="):
        calibrate_noise(
            what="test", noise_multiplier=0.3, target_epsilon=1.0, delta=1e-5,
            sample_rate=1.0, steps=10,
        )  # fmt: skip


def test_neither_noise_nor_target_is_refused():
    with pytest.raises(ConfigError, match="noise_multiplier or target_epsilon"):
        calibrate_noise(
            what="test", noise_multiplier=None, target_epsilon=None, delta=1e-5,
            sample_rate=1.0, steps=10,
        )  # fmt: skip


@SETTINGS
@given(rows=st.integers(1, 10_000), batch=st.integers(1, 512), epochs=st.integers(1, 5))
def test_poisson_schedule_expects_one_batch_per_step(rows, batch, epochs):
    rate, steps = poisson_schedule(num_examples=rows, batch_size=batch, epochs=epochs)
    batches = math.ceil(rows / batch)
    assert rate == 1.0 / batches and steps == epochs * batches
