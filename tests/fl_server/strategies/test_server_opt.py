"""Server optimizers: property tests, the formulas by hand, and state that survives JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl_core.aggregation import weighted_mean
from fl_core.config import load_config
from fl_core.errors import AggregationError
from fl_server.strategies import build_aggregator
from fl_server.strategies.server_opt import ServerOptimizerAggregator

from .helpers import aggregate, assert_models_close

RULES = ["fedavgm", "fedadam", "fedyogi", "fedadagrad"]
GLOBAL = {"w": np.full((2, 3), 0.5, np.float32), "b": np.zeros(4, np.float32)}
finite = st.floats(-100, 100, width=32)


def make(rule: str) -> ServerOptimizerAggregator:
    return ServerOptimizerAggregator(
        rule,
        server_learning_rate=0.1,
        beta1=0.9,
        beta2=0.99,
        tau=1e-3,  # type: ignore[arg-type]
    )


@st.composite
def update_sets(draw: st.DrawFn) -> list:
    size = draw(st.integers(1, 6))
    return [
        (
            f"site-{i}",
            {
                name: draw(arrays(np.float32, a.shape, elements=finite))
                for name, a in GLOBAL.items()
            },
            draw(st.integers(1, 5000)),
        )
        for i in range(size)
    ]


@pytest.mark.parametrize("rule", RULES)
@settings(max_examples=30, deadline=None)
@given(rounds=st.lists(update_sets(), min_size=1, max_size=3), data=st.data())
def test_order_invariant_over_several_rounds(rule, rounds, data):
    first, second = make(rule), make(rule)
    model_a = model_b = GLOBAL
    for index, updates in enumerate(rounds, start=1):
        order = data.draw(st.permutations(range(len(updates))))
        model_a = aggregate(first, model_a, updates, index)
        model_b = aggregate(second, model_b, [updates[i] for i in order], index)
        assert_models_close(model_a, model_b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", RULES)
@settings(max_examples=30, deadline=None)
@given(updates=update_sets())
def test_depends_on_the_updates_only_through_their_weighted_mean(rule, updates):
    """Weights respected: the updates act exactly as their FedAvg would, as one update."""
    mean = weighted_mean([(m, n) for _, m, n in updates])
    together = aggregate(make(rule), GLOBAL, updates)
    alone = aggregate(make(rule), GLOBAL, [("site-x", mean, 1)])
    assert_models_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", RULES)
def test_identical_updates_equal_to_the_global_leave_it_unchanged(rule):
    updates = [(f"site-{i}", GLOBAL, 10 * (i + 1)) for i in range(3)]
    assert_models_close(aggregate(make(rule), GLOBAL, updates), GLOBAL, rtol=0, atol=0)


@settings(max_examples=30, deadline=None)
@given(updates=update_sets())
def test_fedavgm_without_momentum_at_rate_one_is_fedavg(updates):
    aggregator = ServerOptimizerAggregator("fedavgm", server_learning_rate=1.0, beta1=0.0)
    expected = weighted_mean([(m, n) for _, m, n in updates])
    assert_models_close(aggregate(aggregator, GLOBAL, updates), expected, rtol=1e-5, atol=1e-4)


def _second_moment(rule: str, v: np.ndarray, delta: np.ndarray, b2: float) -> np.ndarray:
    """Reddi et al. 2021's v update of each adaptive rule, written out by hand."""
    if rule == "fedadam":
        return b2 * v + (1 - b2) * delta**2
    if rule == "fedyogi":
        return v - (1 - b2) * delta**2 * np.sign(v - delta**2)
    return v + delta**2


def test_two_rounds_follow_the_published_formulas():
    """Reddi et al. 2021, Algorithm 2 and Hsu et al. 2019, written out by hand in float64."""
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    start = {"w": np.array([0.5, -0.2, 0.0], np.float32)}
    targets = [np.array([0.7, -0.1, 0.3]), np.array([0.2, 0.4, -0.5])]
    for rule in RULES:
        aggregator = make(rule)
        x = start["w"].astype(np.float64)
        m = np.zeros(3)
        v = np.zeros(3)
        model = start
        for round_index, target in enumerate(targets, start=1):
            update = {"w": target.astype(np.float32)}
            model = aggregate(aggregator, model, [("site-a", update, 7)], round_index)
            delta = target.astype(np.float32).astype(np.float64) - x
            if rule == "fedavgm":
                m = b1 * m + delta
                x = x + lr * m
            else:
                m = b1 * m + (1 - b1) * delta
                v = _second_moment(rule, v, delta, b2)
                x = x + lr * m / (np.sqrt(v) + tau)
            x = x.astype(np.float32).astype(np.float64)
            np.testing.assert_allclose(model["w"], x, rtol=1e-5, atol=1e-6, err_msg=rule)


def test_bias_correction_divides_by_the_zero_start_factors():
    """Kingma & Ba's correction: m / (1 - b1**t), and v / (1 - b2**t) except for Adagrad."""
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    start = np.array([0.5, -0.2, 0.0], np.float32)
    targets = [np.array([0.7, -0.1, 0.3]), np.array([0.2, 0.4, -0.5])]
    for rule in RULES[1:]:
        aggregator = ServerOptimizerAggregator(
            rule,  # type: ignore[arg-type]
            server_learning_rate=lr,
            beta1=b1,
            beta2=b2,
            tau=tau,
            bias_correction=True,
        )
        x, m, v = start.astype(np.float64), np.zeros(3), np.zeros(3)
        model = {"w": start}
        for t, target in enumerate(targets, start=1):
            model = aggregate(
                aggregator, model, [("site-a", {"w": target.astype(np.float32)}, 3)], t
            )
            delta = target.astype(np.float32).astype(np.float64) - x
            m = b1 * m + (1 - b1) * delta
            v = _second_moment(rule, v, delta, b2)
            v_hat = v if rule == "fedadagrad" else v / (1 - b2**t)
            x = x + lr * (m / (1 - b1**t)) / (np.sqrt(v_hat) + tau)
            x = x.astype(np.float32).astype(np.float64)
            np.testing.assert_allclose(model["w"], x, rtol=1e-5, atol=1e-6, err_msg=rule)
        # the first round moves every coordinate by about the server learning rate
    first = ServerOptimizerAggregator("fedadam", server_learning_rate=lr, bias_correction=True)
    moved = aggregate(first, {"w": start}, [("site-a", {"w": targets[0].astype(np.float32)}, 3)])
    np.testing.assert_allclose(np.abs(moved["w"] - start), lr, rtol=0.02)


@pytest.mark.parametrize("rule", RULES)
def test_state_through_json_resumes_bit_for_bit(rule):
    rng = np.random.default_rng(1)
    rounds = [
        [
            (
                f"site-{i}",
                {k: rng.normal(size=a.shape).astype(np.float32) for k, a in GLOBAL.items()},
                5 + i,
            )
            for i in range(3)
        ]
        for _ in range(4)
    ]
    straight = make(rule)
    model = GLOBAL
    for index, updates in enumerate(rounds, start=1):
        model = aggregate(straight, model, updates, index)

    resumed_model = GLOBAL
    aggregator = make(rule)
    for index, updates in enumerate(rounds, start=1):
        text = json.dumps(aggregator.state_dict())  # what state.json carries
        aggregator = make(rule)  # a restarted aggregator process
        aggregator.load_state_dict(json.loads(text))
        resumed_model = aggregate(aggregator, resumed_model, updates, index)
    for name in model:
        np.testing.assert_array_equal(model[name], resumed_model[name])
    assert aggregator.state_dict() == straight.state_dict()


def test_state_of_another_strategy_or_a_tampered_one_is_refused():
    adam = make("fedadam")
    aggregate(adam, GLOBAL, [("site-a", {k: a + 1 for k, a in GLOBAL.items()}, 3)])
    state = adam.state_dict()
    with pytest.raises(AggregationError, match="not 'fedyogi'"):
        make("fedyogi").load_state_dict(state)
    tampered = json.loads(json.dumps(state))
    tampered["moments"]["sha256"] = "0" * 64
    with pytest.raises(AggregationError, match="fails its sha256"):
        make("fedadam").load_state_dict(tampered)


def test_moments_that_do_not_fit_the_model_are_refused():
    adam = make("fedadam")
    aggregate(adam, GLOBAL, [("site-a", {k: a + 1 for k, a in GLOBAL.items()}, 3)])
    resumed = make("fedadam")
    resumed.load_state_dict(adam.state_dict())
    with pytest.raises(AggregationError, match="start a new federation_id"):
        resumed.begin_round(2, {"w": np.zeros((5, 5), np.float32), "b": np.zeros(4, np.float32)})


@pytest.mark.parametrize("name", RULES)
def test_built_from_config(name):
    strategy = {"name": name} if name != "fedavgm" else {"name": name, "momentum": 0.5}
    aggregator = build_aggregator(load_config(overrides={"strategy": strategy}))
    assert isinstance(aggregator, ServerOptimizerAggregator) and aggregator.rule == name
