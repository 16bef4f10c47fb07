"""A small federation with DP-SGD and DP-FedAvg through the real round loop and hospital loop:
a hospital whose budget runs out declines, and result.json, status show what was spent."""

from __future__ import annotations

import threading

import pytest

from fedsilo.engine.app import DEFAULT_APP
from fedsilo.ops.status import collect_status, status_table
from fl_client.hospital import serve_sites
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.protocol import Exchange
from fl_core.models import model_weights
from fl_server.dp_fedavg import DpFedAvgAggregator
from fl_server.round_loop import RoundLoop
from fl_server.strategies import build_aggregator
from tests.fl_client._private_hospitals import dp_config, make_hospital


def run_federation(source, config, tmp_path):
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), config.federation_id)
    hospitals = [
        make_hospital(source, config, index, state_dir=tmp_path / "state" / site)
        for index, site in enumerate(source.site_ids())
    ]
    errors: list[BaseException] = []

    def serve(hospital):
        try:
            serve_sites(exchange, [hospital], config, timeout_s=120)
        except BaseException as err:  # surfaced by the test, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=serve, args=(h,), daemon=True) for h in hospitals]
    for thread in threads:
        thread.start()
    initial = model_weights(DEFAULT_APP.model(len(source.feature_names()), config))
    aggregator = build_aggregator(config)
    RoundLoop(exchange, aggregator, config, source.site_ids(), initial_weights=initial).run()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return exchange, aggregator


def test_budget_exhausted_hospital_declines_and_epsilons_are_recorded(source, tmp_path):
    sites = source.site_ids()
    config = dp_config(
        rounds=2,
        **{
            "round.deadline_s": 60.0,
            "round.below_quorum": "fail",  # a hospital that crashed fails the test quickly
            "privacy.dp_sgd.target_epsilon": 4.0,
            "privacy.dp_sgd.delta": 1e-4,
            f"privacy.dp_sgd.sites.{sites[0]}": {"rounds": 1},  # agreed to one round only
            "privacy.dp_fedavg.noise_multiplier": 0.8,
            "privacy.dp_fedavg.clip_norm": 1.0,
            "privacy.dp_fedavg.delta": 1e-2,
        },
    )
    exchange, aggregator = run_federation(source, config, tmp_path)
    assert isinstance(aggregator, DpFedAvgAggregator)
    first, second, final = (exchange.read_result(r) for r in (1, 2, 3))
    assert first is not None and second is not None and final is not None
    assert {d.site_id for d in first.accepted} == set(sites)
    assert [(d.site_id, d.reason) for d in second.declined] == [
        (sites[0], "privacy_budget_exhausted")
    ]
    assert {d.site_id for d in second.accepted} == set(sites[1:])
    assert second.missing == []  # the round closed at once: the refusal is an answer
    assert second.evaluation is not None and second.evaluation.num_sites == len(sites)
    # DP-SGD epsilon per hospital per round, rising for those that trained
    assert first.privacy is not None and second.privacy is not None
    assert set(first.privacy.site_epsilon) == set(sites)
    assert second.privacy.site_epsilon[sites[0]] == first.privacy.site_epsilon[sites[0]]
    for site in sites[1:]:
        assert second.privacy.site_epsilon[site] > first.privacy.site_epsilon[site]
    assert all(0 < e <= 4.0 for e in second.privacy.site_epsilon.values())
    # DP-FedAvg epsilon after one and two rounds
    assert first.privacy.dp_fedavg_epsilon is not None
    assert second.privacy.dp_fedavg_epsilon == pytest.approx(aggregator.epsilon)
    assert second.privacy.dp_fedavg_epsilon > first.privacy.dp_fedavg_epsilon
    # a restarted aggregator resumes DP-FedAvg's accountant from state.json
    found = exchange.read_state()
    assert found is not None
    restarted = build_aggregator(config)
    restarted.load_state_dict(found[0].strategy_state)
    assert isinstance(restarted, DpFedAvgAggregator)
    assert restarted.epsilon == pytest.approx(aggregator.epsilon, rel=1e-12)
    status = collect_status(exchange)
    by_site = {s.site_id: s for s in status.sites}
    assert by_site[sites[0]].last_rejection == "round 2: declined: privacy_budget_exhausted"
    assert by_site[sites[1]].epsilon == pytest.approx(second.privacy.site_epsilon[sites[1]])
    assert status.dp_fedavg_epsilon == pytest.approx(aggregator.epsilon)
    assert "DP-FedAvg epsilon" in str(status_table(status).title)
