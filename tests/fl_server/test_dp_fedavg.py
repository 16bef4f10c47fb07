"""DP-FedAvg at the aggregator: clipping bounds a hospital's influence, the noise has the
calibrated scale, epsilon is Opacus's, and the state survives a restart."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant

from fl_core.config import load_config
from fl_core.errors import ConfigError
from fl_core.privacy import DpFedAvgConfig
from fl_server.dp_fedavg import DpFedAvgAggregator
from fl_server.strategies import build_aggregator

SITES = [f"site-{i}" for i in range(5)]
GLOBAL = {
    "w": np.zeros((40, 50), np.float32),
    "b": np.ones(50, np.float32),
    "input_std": np.full(4, 2.0, np.float32),
}


def aggregator(noise: float = 1.0, clip: float = 0.5, rounds: int = 10) -> DpFedAvgAggregator:
    config = DpFedAvgConfig(clip_norm=clip, noise_multiplier=noise, delta=1e-3)
    agg = DpFedAvgAggregator(config, rounds)
    agg.set_invited_sites(SITES)
    return agg


def moved(weights, by: dict[str, float]):
    return {name: array + by.get(name, 0.0) for name, array in weights.items()}


def test_a_huge_update_moves_the_model_by_at_most_clip_over_n():
    agg = aggregator(noise=1e-9, clip=0.5)
    agg.begin_round(1, GLOBAL)
    agg.add(moved(GLOBAL, {"w": 1e6}), 10)  # a hostile hospital
    for _ in range(3):
        agg.add(GLOBAL, 10)
    out = agg.finish()
    delta = np.concatenate([(out[k] - GLOBAL[k]).ravel() for k in ("w", "b")])
    assert np.linalg.norm(delta) == pytest.approx(0.5 / len(SITES), rel=1e-4)
    assert agg.clipped == 1
    np.testing.assert_array_equal(out["input_std"], GLOBAL["input_std"])  # never noised


def test_small_updates_average_with_the_fixed_denominator():
    agg = aggregator(noise=1e-9, clip=100.0)
    agg.begin_round(1, GLOBAL)
    agg.add(moved(GLOBAL, {"b": 0.01}), 1)
    agg.add(moved(GLOBAL, {"b": 0.03}), 1000)  # every hospital counts once, whatever its size
    out = agg.finish()
    np.testing.assert_allclose(out["b"], 1.0 + 0.04 / len(SITES), atol=1e-6)


def test_noise_std_is_noise_multiplier_times_clip_over_n():
    agg = aggregator(noise=1.3, clip=0.5)
    agg.begin_round(1, GLOBAL)
    for _ in range(3):
        agg.add(GLOBAL, 10)
    out = agg.finish()
    draws = np.concatenate([(out[k] - GLOBAL[k]).ravel().astype(np.float64) for k in ("w", "b")])
    expected = 1.3 * 0.5 / len(SITES)
    # 2050 draws: the sample std is within 5% of the truth with overwhelming probability
    assert draws.std() == pytest.approx(expected, rel=0.05)
    assert abs(draws.mean()) < 4 * expected / np.sqrt(draws.size)


@settings(max_examples=10, deadline=None)
@given(noise=st.floats(0.3, 5.0), rounds=st.integers(1, 30))
def test_epsilon_is_opacus_rdp_for_the_same_steps(noise, rounds):
    agg = aggregator(noise=noise, rounds=30)
    reference = RDPAccountant()
    for round_index in range(1, rounds + 1):
        agg.begin_round(round_index, GLOBAL)
        agg.add(GLOBAL, 1)
        agg.finish()
        reference.step(noise_multiplier=noise, sample_rate=1.0)
    assert agg.epsilon == pytest.approx(reference.get_epsilon(delta=1e-3), rel=1e-12)


def test_state_survives_a_restart_and_reaggregates_identically():
    agg = aggregator()
    for round_index in (1, 2):
        agg.begin_round(round_index, GLOBAL)
        agg.add(moved(GLOBAL, {"w": 0.1}), 5)
        agg.finish()
    saved = agg.state_dict()
    agg.begin_round(3, GLOBAL)
    agg.add(moved(GLOBAL, {"w": 0.1}), 5)
    first = agg.finish()

    restarted = aggregator()  # a new aggregator process resuming round 3 from state.json
    restarted.load_state_dict(saved)
    restarted.begin_round(3, GLOBAL)
    restarted.add(moved(GLOBAL, {"w": 0.1}), 5)
    again = restarted.finish()
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])  # same secret noise seed
    assert restarted.epsilon == pytest.approx(agg.epsilon, rel=1e-12)
    assert restarted.state_dict()["dp_fedavg"]["accountant"]["history"] == [[1.0, 1.0, 3]]


def test_state_without_dp_or_with_other_noise_is_refused():
    with pytest.raises(Exception, match=r"started without privacy\.dp_fedavg"):
        aggregator().load_state_dict({})
    with pytest.raises(Exception, match=r"noise_multiplier 2\.0"):
        aggregator(noise=1.0).load_state_dict(aggregator(noise=2.0).state_dict())


def test_target_epsilon_derives_the_noise_and_is_kept():
    config = load_config(
        overrides={"privacy.dp_fedavg.target_epsilon": 3.0, "privacy.dp_fedavg.delta": 1e-3}
    )
    agg = build_aggregator(config)
    assert isinstance(agg, DpFedAvgAggregator)
    agg.set_invited_sites(SITES)
    for round_index in range(1, config.rounds + 1):
        agg.begin_round(round_index, GLOBAL)
        agg.add(GLOBAL, 1)
        agg.finish()
    assert 2.9 < agg.epsilon <= 3.0


def test_delta_at_least_one_over_sites_is_refused_when_sites_are_known():
    agg = DpFedAvgAggregator(DpFedAvgConfig(noise_multiplier=1.0, delta=0.3), 10)
    with pytest.raises(ConfigError, match=r"delta 0.3 >= 1/n = 1/5 sites"):
        agg.set_invited_sites(SITES)
