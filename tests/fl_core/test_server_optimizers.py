"""Property tests of one server-optimizer step (``fl_core.server_optimizers``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl_core.errors import AggregationError
from fl_core.server_optimizers import server_optimizer_step

SETTINGS = settings(max_examples=60, deadline=None)
RULES = ["fedavgm", "fedadam", "fedyogi", "fedadagrad"]
deltas = arrays(np.float64, 6, elements=st.floats(-10, 10, allow_nan=False))
moments = arrays(np.float32, 6, elements=st.floats(0, 10, width=32))


def step(rule, delta, m=None, v=None, *, bias_correction=True, t=1, beta1=0.9):
    return server_optimizer_step(
        rule=rule, delta=delta, m=m, v=v, beta1=beta1, beta2=0.99, tau=1e-3,
        bias_correction=bias_correction, step=t,
    )  # fmt: skip


@pytest.mark.parametrize("rule", RULES)
def test_zero_delta_from_zero_moments_moves_nothing(rule):
    direction, m, v = step(rule, np.zeros(4))
    assert not direction.any() and not m.any()
    assert v is None if rule == "fedavgm" else not v.any()


@SETTINGS
@given(delta=deltas, m=moments, v=moments, data=st.data())
def test_each_coordinate_is_independent_of_the_others(delta, m, v, data):
    """A permutation of the coordinates permutes the step: no coordinate leaks into another."""
    rule = data.draw(st.sampled_from(RULES))
    order = np.array(data.draw(st.permutations(range(delta.size))))
    direction, m_new, v_new = step(rule, delta, m, v, t=3)
    moved, m_moved, v_moved = step(rule, delta[order], m[order], v[order], t=3)
    np.testing.assert_array_equal(moved, direction[order])
    np.testing.assert_array_equal(m_moved, m_new[order])
    if v_new is not None:
        np.testing.assert_array_equal(v_moved, v_new[order])


@SETTINGS
@given(delta=deltas)
def test_fedavgm_without_momentum_steps_by_the_delta(delta):
    direction, m, v = step("fedavgm", delta, beta1=0.0)
    np.testing.assert_array_equal(direction, delta.astype(np.float32).astype(np.float64))
    assert v is None and m.dtype == np.float32


@SETTINGS
@given(delta=deltas)
def test_bias_corrected_first_adam_step_is_about_the_sign(delta):
    """At t = 1 the corrected moments are delta and delta**2: the step is delta/(|delta|+tau)."""
    direction, _, _ = step("fedadam", delta)
    expected = delta / (np.abs(delta) + 1e-3)
    np.testing.assert_allclose(direction, expected, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(delta=deltas, v=moments, t=st.integers(1, 50))
def test_adagrad_second_moment_never_shrinks(delta, v, t):
    _, _, v_new = step("fedadagrad", delta, None, v, t=t)
    assert v_new is not None and np.all(v_new >= v)


def test_the_step_is_computed_from_the_float32_moments_it_returns():
    """A resumed run reads the float32 moments back: the direction must use the same ones."""
    delta = np.array([1.0 / 3.0, 2.0 / 7.0])
    direction, m, v = step("fedadam", delta, bias_correction=False)
    assert v is not None
    expected = m.astype(np.float64) / (np.sqrt(v.astype(np.float64)) + 1e-3)
    np.testing.assert_array_equal(direction, expected)


def test_steps_count_from_one_and_rules_are_known():
    with pytest.raises(AggregationError, match="count from 1"):
        step("fedadam", np.zeros(2), t=0)
    with pytest.raises(AggregationError, match="unknown server optimizer"):
        step("fedsgd", np.zeros(2))
