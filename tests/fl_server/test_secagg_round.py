"""Secure aggregation through the round loop, over a local-directory exchange.

The aggregator is a real ``RoundLoop``; each hospital is a thread running the real client
loop (``serve_sites``, see ``bench/_secagg_harness.py``). A "killed" hospital dies right after
its masked update is written, so it never answers the unmask request, or right before, so its
update never arrives.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from bench._secagg_harness import (
    Logistic,
    ShiftTrainer,
    run_round,
    secagg_round_config,
    site_data,
)
from fl_core.aggregation import weighted_mean
from fl_core.errors import ConfigError, RoundFailedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.protocol import Exchange
from fl_core.secagg import transport
from fl_core.secagg.field import FieldParams, quantisation_error_bound
from fl_core.secagg.messages import SecAggRoster, SecAggUnmaskRequest
from fl_core.serialisation import decode_weights, read_tensor_specs
from fl_server.aggregator import FedAvgAggregator
from fl_server.moments import gather_moments
from fl_server.round_loop import RoundLoop

SITES = [f"site-{c}" for c in "abcdef"]
FEATURES = 4

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def federation(tmp_path: Path, dying: dict[str, str]) -> tuple[Exchange, dict[str, dict]]:
    exchange, _, trained = run_round(
        tmp_path, SITES, secagg_round_config(SITES), lambda: Logistic(FEATURES), dying
    )
    return exchange, trained


def next_global(exchange: Exchange) -> dict[str, np.ndarray]:
    manifest = exchange.read_global_manifest(2)
    assert manifest is not None
    return decode_weights(exchange.read_global_weights(manifest))


def request_of(exchange: Exchange) -> SecAggUnmaskRequest:
    key = exchange.layout.secagg_global_key(1, "unmask")
    request = transport.read(exchange, key, SecAggUnmaskRequest)
    assert request is not None
    return request


def assert_fedavg_of_all(exchange: Exchange, initial: dict[str, np.ndarray]) -> None:
    """Round 1's model is FedAvg of every site's (deterministic, here replayed) training."""
    trained: dict[str, dict] = {}
    for site in SITES:
        trainer = ShiftTrainer(Logistic(FEATURES), trained)
        trainer.set_weights(initial)
        trainer.train(site_data(site, FEATURES), 1, 0)
    sizes = {s: site_data(s, FEATURES).train.num_examples for s in SITES}
    expected = weighted_mean([(trained[s], sizes[s]) for s in SITES])
    got = next_global(exchange)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7)


def test_a_third_killed_after_masking_still_completes_with_their_updates(tmp_path: Path) -> None:
    victims = {"site-b": "after_update", "site-e": "after_update"}  # 2 of 6
    exchange, trained = federation(tmp_path, victims)
    result = exchange.read_result(1)
    assert result is not None
    assert sorted(d.site_id for d in result.accepted) == SITES  # victims' updates count
    roster = transport.read(exchange, exchange.layout.secagg_global_key(1, "roster"), SecAggRoster)
    assert roster is not None and roster.threshold == 4
    request = request_of(exchange)
    assert request.survivors == SITES and request.dropped == []
    layout = exchange.layout
    answered = [s for s in SITES if exchange.store.exists(layout.secagg_update_key(1, s, "answer"))]
    assert answered == [s for s in SITES if s not in victims]
    # what the aggregator held for each site was a uint64 masked update, never the weights
    data = exchange.read_update_weights(1, "site-a")
    assert {spec.dtype for spec in read_tensor_specs(data).values()} == {"uint64"}
    got = next_global(exchange)
    sizes = {s: site_data(s, FEATURES).train.num_examples for s in SITES}
    expected = weighted_mean([(trained[s], sizes[s]) for s in SITES])
    params = FieldParams(roster.modulus_bits, roster.fractional_bits, roster.clip)
    bound = quantisation_error_bound(len(SITES), sum(sizes.values()), params)
    for name in expected:  # the bound, plus float32 rounding of the stored model
        tolerance = bound + np.abs(expected[name]) * np.finfo(np.float32).eps
        assert np.all(np.abs(got[name].astype(np.float64) - expected[name]) <= tolerance)


def test_sites_that_drop_before_sending_have_their_pair_masks_removed(tmp_path: Path) -> None:
    exchange, trained = federation(tmp_path, {"site-c": "before_update"})
    assert request_of(exchange).dropped == ["site-c"]
    got = next_global(exchange)
    survivors = [s for s in SITES if s != "site-c"]
    sizes = {s: site_data(s, FEATURES).train.num_examples for s in survivors}
    expected = weighted_mean([(trained[s], sizes[s]) for s in survivors])
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7)


def test_fewer_than_t_survivors_fail_the_round_with_the_counts(tmp_path: Path) -> None:
    victims = {s: "before_update" for s in ("site-a", "site-c", "site-f")}  # 3 of 6, t = 4
    with pytest.raises(RoundFailedError) as failed:
        federation(tmp_path, victims)
    message = str(failed.value)
    assert "3 of 6 hospitals delivered a masked update (3 dropped)" in message
    assert "threshold t=4" in message
    state = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "sa").read_state()
    assert state is not None and state[0].phase == "failed"


def test_secagg_refuses_strategies_that_need_each_update() -> None:
    with pytest.raises(ConfigError, match=r"privacy\.secagg cannot run with strategy\.name 'krum'"):
        secagg_round_config(SITES, **{"strategy.name": "krum"})


def test_secagg_and_central_dp_fedavg_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="exclude each other"):
        secagg_round_config(SITES, **{"privacy.dp_fedavg": {"noise_multiplier": 1.0}})


class AggregatorCrash(BaseException):
    """The aggregator process dies."""


def test_an_aggregator_killed_while_unmasking_resumes_from_the_exchange(tmp_path: Path) -> None:
    config = secagg_round_config(
        SITES, **{"round.lease_s": 1.0, "privacy.secagg.unmask_timeout_s": 30.0}
    )
    request_key = "federations/sa/rounds/000001/global.secagg-unmask.json"

    def crash_once_requested(seconds: float) -> None:
        if (tmp_path / "exchange" / request_key).exists():
            raise AggregatorCrash
        time.sleep(seconds)

    with pytest.raises(AggregatorCrash):
        run_round(tmp_path, SITES, config, lambda: Logistic(FEATURES), sleep=crash_once_requested)
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "sa")
    state = exchange.read_state()
    assert state is not None and state[0].phase == "collecting" and state[0].round_index == 1
    # a new aggregator takes over once the lease lapses: the roster, setup, request, answers
    # and masked updates it needs are all write-once files in the exchange
    first = exchange.read_global_manifest(1)
    assert first is not None
    initial = decode_weights(exchange.read_global_weights(first))
    RoundLoop(exchange, FedAvgAggregator(), config, SITES, initial_weights=initial).run()
    result = exchange.read_result(1)
    assert result is not None and len(result.accepted) == len(SITES)
    assert request_of(exchange).survivors == SITES
    assert_fedavg_of_all(exchange, initial)


@pytest.mark.slow
def test_hospital_processes_sigkilled_after_masking(tmp_path: Path) -> None:
    """Hospitals as processes: one hosts four sites (answering for all of them without
    deadlock), two more host one site each and are SIGKILLed once their masked update is in."""
    import multiprocessing
    import os
    import signal

    from bench._secagg_harness import serve_in_process
    from fedsilo.engine.secagg_keys import register_simulated_sites

    config = secagg_round_config(SITES, **{"round.deadline_s": 4.0})
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "sa")
    register_simulated_sites(exchange, SITES, tmp_path / "keys")
    context = multiprocessing.get_context("spawn")
    groups = {"live": ["site-a", "site-c", "site-d", "site-f"], "b": ["site-b"], "e": ["site-e"]}
    procs = {}
    for name, sites in groups.items():
        when = "" if name == "live" else "hang_after_update"
        procs[name] = context.Process(
            target=serve_in_process, args=(tmp_path, sites, config, FEATURES, when), daemon=True
        )
        procs[name].start()
    # hospitals report their moments once they are up: wait for all of them as the aggregator
    # does (a spawned process imports torch first, far longer than the round's 4 s deadline)
    startup = config.model_copy(
        update={"round": config.round.model_copy(update={"deadline_s": 120.0})}
    )
    assert len(gather_moments(exchange, SITES, FEATURES, startup)) == len(SITES)
    killed: list[str] = []

    def sleep_and_kill(seconds: float) -> None:
        for name in ("b", "e"):
            site = groups[name][0]
            if name not in killed and site in exchange.list_answered_sites(1):
                os.kill(procs[name].pid or 0, signal.SIGKILL)
                killed.append(name)
        time.sleep(seconds)

    torch_initial = Logistic(FEATURES)
    initial = {k: v.detach().numpy().copy() for k, v in torch_initial.state_dict().items()}
    try:
        RoundLoop(
            exchange,
            FedAvgAggregator(),
            config,
            SITES,
            initial_weights=initial,
            sleep=sleep_and_kill,
        ).run()
    finally:
        for proc in procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    assert sorted(killed) == ["b", "e"]
    assert procs["b"].exitcode == -signal.SIGKILL
    request = request_of(exchange)
    assert request.survivors == SITES  # the killed sites' masked updates count
    assert_fedavg_of_all(exchange, initial)
