"""Secure aggregation through the round loop, over a local-directory exchange.

The aggregator is a real ``RoundLoop``; each hospital is a thread running the real client
loop (``serve_sites``). A "killed" hospital dies (an uncatchable exception ends its thread)
right after its masked update is written, so it never answers the unmask request, or right
before, so its update never arrives.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedsilo.secagg_keys import key_path, load_key, register_simulated_sites
from fl_client.hospital import Hospital, serve_sites
from fl_client.trainer import ClientTrainer, TrainResult
from fl_core.aggregation import weighted_mean
from fl_core.config import FederationConfig, load_config
from fl_core.data.base import SiteData, Split
from fl_core.errors import ConfigError, RoundFailedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.secagg import transport
from fl_core.secagg.field import FieldParams, quantisation_error_bound
from fl_core.secagg.messages import SecAggRoster, SecAggUnmaskRequest
from fl_core.serialization import decode_weights, read_tensor_specs
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_loop import RoundLoop

SITES = [f"site-{c}" for c in "abcdef"]
FEATURES = 4


class Killed(BaseException):
    """Ends a hospital thread the way SIGKILL ends a process: nothing catches it."""


class DyingExchange(Exchange):
    """A hospital's exchange that dies around its (masked) update write."""

    def __init__(self, store: LocalDirectoryStore, federation_id: str, when: str) -> None:
        super().__init__(store, federation_id)
        self.when = when

    def write_update(self, manifest: UpdateManifest, weights: bytes | None) -> None:
        if self.when == "before_update" and manifest.task == "train":
            raise Killed
        super().write_update(manifest, weights)
        if self.when == "after_update" and manifest.task == "train":
            raise Killed


class Tiny(nn.Module):
    """A logistic regression whose output is one logit per row."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(FEATURES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x).squeeze(-1)
        return out


class ShiftTrainer(ClientTrainer):
    """Moves every parameter by a fixed site-specific delta, and remembers the result."""

    trained: dict[str, dict[str, np.ndarray]] = {}

    def train(self, data: SiteData, round_index: int, seed: int) -> TrainResult:
        rng = np.random.default_rng([SITES.index(data.site_id), round_index])
        with torch.no_grad():
            for param in self.model.parameters():
                param.add_(torch.from_numpy(rng.normal(scale=0.05, size=param.shape)).float())
        ShiftTrainer.trained[data.site_id] = self.get_weights()
        return TrainResult(num_examples=data.train.num_examples, train_loss=0.5)


def site_data(site: str) -> SiteData:
    rng = np.random.default_rng(SITES.index(site))
    rows = 10 + 7 * SITES.index(site)

    def split(n: int) -> Split:
        return Split(
            rng.normal(size=(n, FEATURES)).astype(np.float32),
            (rng.random(n) < 0.3).astype(np.int8),
        )

    return SiteData(site, tuple(f"f{i}" for i in range(FEATURES)), split(rows), split(4), split(6))


def make_config(**overrides: object) -> FederationConfig:
    base: dict[str, object] = {
        "federation_id": "sa",
        "rounds": 1,
        "evaluation.histogram_bins": 10,
        "round.min_sites": 2,
        "round.deadline_s": 3.0,
        "round.poll_interval_s": 0.02,
        "round.below_quorum": "fail",
        "data.synthetic.hospitals": len(SITES),
        "privacy.secagg.enabled": True,
        "privacy.secagg.advert_timeout_s": 20.0,
        "privacy.secagg.unmask_timeout_s": 2.0,
    }
    base.update(overrides)
    return load_config(overrides=base)


def run_federation(
    tmp_path: Path, config: FederationConfig, dying: dict[str, str]
) -> tuple[Exchange, dict[str, np.ndarray]]:
    store = LocalDirectoryStore(tmp_path / "exchange")
    exchange = Exchange(store, config.federation_id)
    register_simulated_sites(exchange, SITES, tmp_path / "keys")
    torch.manual_seed(0)
    model = Tiny()
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    ShiftTrainer.trained = {}
    threads = []
    for site in SITES:
        hospital = Hospital(
            data=site_data(site),
            trainer=ShiftTrainer(Tiny()),
            secagg_key=load_key(key_path(tmp_path / "keys", site)),
        )
        own = DyingExchange(LocalDirectoryStore(tmp_path / "exchange"), "sa", dying.get(site, ""))
        thread = threading.Thread(
            target=lambda o=own, h=hospital: serve_sites(o, [h], config, 60.0), daemon=True
        )
        thread.start()
        threads.append(thread)
    loop = RoundLoop(exchange, FedAvgAggregator(), config, SITES, initial_weights=initial)
    try:
        loop.run()
    finally:
        give_up = time.monotonic() + 5  # hospitals of a failed round wait on; they are daemons
        for thread in threads:
            thread.join(timeout=max(0.0, give_up - time.monotonic()))
    return exchange, initial


def test_a_third_killed_after_masking_still_completes_with_their_updates(tmp_path: Path) -> None:
    victims = {"site-b": "after_update", "site-e": "after_update"}  # 2 of 6
    exchange, _ = run_federation(tmp_path, make_config(), victims)
    result = exchange.read_result(1)
    assert result is not None
    assert sorted(d.site_id for d in result.accepted) == SITES  # victims' updates count
    roster = transport.read(exchange, exchange.layout.secagg_global_key(1, "roster"), SecAggRoster)
    request = transport.read(
        exchange, exchange.layout.secagg_global_key(1, "unmask"), SecAggUnmaskRequest
    )
    assert roster is not None and roster.threshold == 4 and request is not None
    assert request.survivors == SITES and request.dropped == []
    answered = [
        s for s in SITES if exchange.store.exists(exchange.layout.secagg_update_key(1, s, "answer"))
    ]
    assert answered == [s for s in SITES if s not in victims]
    # what the aggregator held for each site was a uint64 masked update, never the weights
    data = exchange.read_update_weights(1, "site-a")
    assert {spec.dtype for spec in read_tensor_specs(data).values()} == {"uint64"}
    manifest = exchange.read_global_manifest(2)
    assert manifest is not None
    got = decode_weights(exchange.read_global_weights(manifest))
    sizes = {s: site_data(s).train.num_examples for s in SITES}
    expected = weighted_mean([(ShiftTrainer.trained[s], sizes[s]) for s in SITES])
    params = FieldParams(roster.modulus_bits, roster.fractional_bits, roster.clip)
    bound = quantisation_error_bound(len(SITES), sum(sizes.values()), params)
    for name in expected:  # the bound, plus float32 rounding of the stored model
        tolerance = bound + np.abs(expected[name]) * np.finfo(np.float32).eps
        assert np.all(np.abs(got[name].astype(np.float64) - expected[name]) <= tolerance)


def test_sites_that_drop_before_sending_have_their_pair_masks_removed(tmp_path: Path) -> None:
    victims = {"site-c": "before_update"}
    exchange, _ = run_federation(tmp_path, make_config(), victims)
    request = transport.read(
        exchange, exchange.layout.secagg_global_key(1, "unmask"), SecAggUnmaskRequest
    )
    assert request is not None and request.dropped == ["site-c"]
    manifest = exchange.read_global_manifest(2)
    assert manifest is not None
    got = decode_weights(exchange.read_global_weights(manifest))
    survivors = [s for s in SITES if s != "site-c"]
    sizes = {s: site_data(s).train.num_examples for s in survivors}
    expected = weighted_mean([(ShiftTrainer.trained[s], sizes[s]) for s in survivors])
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7)


def test_fewer_than_t_survivors_fail_the_round_with_the_counts(tmp_path: Path) -> None:
    victims = {s: "before_update" for s in ("site-a", "site-c", "site-f")}  # 3 of 6, t = 4
    with pytest.raises(RoundFailedError) as failed:
        run_federation(tmp_path, make_config(), victims)
    message = str(failed.value)
    assert "3 of 6 hospitals delivered a masked update (3 dropped)" in message
    assert "threshold t=4" in message
    state = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "sa").read_state()
    assert state is not None and state[0].phase == "failed"


def test_secagg_refuses_strategies_that_need_each_update() -> None:
    with pytest.raises(ConfigError, match=r"privacy\.secagg cannot run with strategy\.name 'krum'"):
        make_config(**{"strategy.name": "krum"})


def test_secagg_and_central_dp_fedavg_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="exclude each other"):
        make_config(**{"privacy.dp_fedavg": {"noise_multiplier": 1.0}})
