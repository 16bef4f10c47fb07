"""SCAFFOLD's server step: x + eta_g * weighted_mean(y_i - x) and c + (|S|/N) * mean(delta c_i)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_core.config import load_config
from fl_core.control_variates import control_name, split_controls
from fl_core.errors import AggregationError
from fl_core.serialisation import decode_weights, encode_weights, view_weights
from fl_server.aggregator import AdmittedUpdate
from fl_server.strategies import build_aggregator
from fl_server.strategies.scaffold import ScaffoldAggregator

MODEL = {
    "w": np.arange(6, dtype=np.float32).reshape(3, 2) / 10,
    "b": np.array([0.5, -0.5], np.float32),
    "steps": np.array([3], np.int64),
}


def _update(rng: np.random.Generator) -> dict[str, np.ndarray]:
    weights = {n: (a + rng.normal(size=a.shape)).astype(a.dtype) for n, a in MODEL.items()}
    weights["steps"] = MODEL["steps"].copy()
    for name in ("w", "b"):
        weights[control_name(name)] = rng.normal(size=MODEL[name].shape).astype(np.float32)
    return weights


def _run(aggregator: ScaffoldAggregator, global_weights, updates, invited: int):
    aggregator.set_invited_sites([f"site-{i}" for i in range(invited)])
    aggregator.begin_round(2, decode_weights(encode_weights(global_weights)))
    for i, (weights, n) in enumerate(updates):
        data = encode_weights(weights)
        aggregator.add_admitted(AdmittedUpdate(f"site-{i}", n, data, view_weights(data)))
    return aggregator.finish()


def test_initial_global_adds_zero_controls_for_floating_tensors_only():
    first = ScaffoldAggregator().initial_global(MODEL)
    model, controls = split_controls(first)
    assert model.keys() == MODEL.keys()
    assert sorted(controls) == ["b", "w"]  # no control for the integer counter
    assert all(not c.any() and c.dtype == np.float32 for c in controls.values())
    assert ScaffoldAggregator().initial_global(first) is first


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    counts=st.lists(st.integers(1, 500), min_size=1, max_size=5),
    extra_invited=st.integers(0, 3),
    eta_g=st.floats(0.1, 2.0),
)
def test_server_step_matches_the_paper(seed, counts, extra_invited, eta_g):
    rng = np.random.default_rng(seed)
    global_weights = ScaffoldAggregator().initial_global(MODEL)
    global_weights[control_name("w")] = rng.normal(size=(3, 2)).astype(np.float32)
    updates = [(_update(rng), n) for n in counts]
    invited = len(counts) + extra_invited
    out = _run(ScaffoldAggregator(eta_g), global_weights, updates, invited)
    total = sum(counts)
    for name in ("w", "b"):
        x = global_weights[name].astype(np.float64)
        mean = sum(u[name].astype(np.float64) * n for u, n in updates) / total
        np.testing.assert_allclose(out[name], x + eta_g * (mean - x), rtol=1e-5, atol=1e-5)
        c = global_weights[control_name(name)].astype(np.float64)
        deltas = sum(u[control_name(name)].astype(np.float64) for u, _ in updates)
        expected_c = c + (len(counts) / invited) * (deltas / len(counts))
        np.testing.assert_allclose(out[control_name(name)], expected_c, rtol=1e-5, atol=1e-6)
        assert out[name].dtype == np.float32
    np.testing.assert_array_equal(out["steps"], MODEL["steps"])


def test_update_order_does_not_matter():
    rng = np.random.default_rng(7)
    global_weights = ScaffoldAggregator().initial_global(MODEL)
    updates = [(_update(rng), n) for n in (5, 50, 500)]
    forward = _run(ScaffoldAggregator(), global_weights, updates, 3)
    backward = _run(ScaffoldAggregator(), global_weights, updates[::-1], 3)
    for name, value in forward.items():
        np.testing.assert_allclose(backward[name], value, rtol=1e-6)


def test_a_fresh_aggregator_recomputes_the_same_model():
    """c lives in the global file, so a restarted aggregator needs no state.json entry."""
    rng = np.random.default_rng(1)
    aggregator = ScaffoldAggregator()
    assert aggregator.state_dict() == {}
    global_weights = aggregator.initial_global(MODEL)
    updates = [(_update(rng), n) for n in (3, 4)]
    first = encode_weights(_run(aggregator, global_weights, updates, 2))
    again = encode_weights(_run(ScaffoldAggregator(), global_weights, updates, 2))
    assert first == again


def test_a_global_without_controls_is_refused():
    with pytest.raises(AggregationError, match=r"scaffold\.c"):
        ScaffoldAggregator().begin_round(1, dict(MODEL))


def test_registered_names_build_the_right_aggregators():
    scaffold = load_config(
        overrides={"strategy": {"name": "scaffold", "server_learning_rate": 0.5}}
    )
    aggregator = build_aggregator(scaffold)
    assert isinstance(aggregator, ScaffoldAggregator)
    assert aggregator.server_learning_rate == 0.5
    fedprox = build_aggregator(load_config(overrides={"strategy": {"name": "fedprox", "mu": 1}}))
    fedprox.begin_round(1, dict(MODEL))
    fedprox.add(MODEL, 3)
    np.testing.assert_allclose(fedprox.finish()["w"], MODEL["w"])
