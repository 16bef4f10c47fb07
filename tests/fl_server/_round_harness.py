"""A round loop over a local-directory exchange with scripted hospitals, shared by the round tests.

Hospitals answer from hooks (``Script.round_opened``) and a fake clock (``FakeTime``), so a test
places each honest or hostile write exactly and never waits on wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedsilo.testing.manifests import answer_to
from fl_core.admission import update_metadata
from fl_core.aggregation import weighted_mean
from fl_core.config import FederationConfig, load_config
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import (
    EvaluationReport,
    GlobalManifest,
    ScoreHistogram,
    SparseCounts,
    UpdateManifest,
)
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import decode_weights, encode_weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop

SITES = ["site-a", "site-b", "site-c", "site-d"]
BINS = 10
INITIAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}


def make_config(**overrides) -> FederationConfig:
    base = {
        "federation_id": "test",
        "rounds": 1,
        "evaluation.histogram_bins": BINS,
        "round.min_sites": 2,
        "round.deadline_s": 100.0,
        "round.poll_interval_s": 1.0,
        "round.lease_s": 30.0,
        "data.synthetic.hospitals": len(SITES),
    }
    base.update(overrides)
    return load_config(overrides=base)


def honest_weights(site: str, round_index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([SITES.index(site) if site in SITES else 99, round_index])
    return {name: rng.normal(size=a.shape).astype(np.float32) for name, a in INITIAL.items()}


def num_examples(site: str) -> int:
    return 10 * (SITES.index(site) + 1) if site in SITES else 7


def evaluation(site: str, bins: int = BINS) -> EvaluationReport:
    return EvaluationReport(
        num_examples=num_examples(site) + 2,
        loss_sum=1.0,
        histogram=ScoreHistogram(
            bins=bins,
            positives=SparseCounts(index=[7], count=[2]),
            negatives=SparseCounts(index=[2], count=[num_examples(site)]),
        ),
    )


def manifest_for(manifest: GlobalManifest, site: str, **changes) -> UpdateManifest:
    """``site``'s answer: its own example count and evaluation unless ``changes`` say."""
    mine = {"num_examples": num_examples(site), "evaluation": evaluation(site)}
    return answer_to(manifest, site, **{**mine, **changes})


def signed(weights: dict[str, np.ndarray], update: UpdateManifest) -> bytes:
    """A training answer as a hospital writes it: the weights, its manifest inside."""
    return encode_weights(weights, update_metadata(update))


def answer(exchange: Exchange, manifest: GlobalManifest, site: str, weights=None) -> UpdateManifest:
    update = manifest_for(manifest, site)
    data = None
    if manifest.task == "train":
        data = signed(weights or honest_weights(site, manifest.round_index), update)
    exchange.write_update(update, data)
    return update


class Script(RoundEvents):
    """Answers rounds as they open; ``on_open`` may add hostile writes."""

    def __init__(self, exchange: Exchange, sites: list[str], on_open: Callable | None = None):
        self.exchange = exchange
        self.sites = sites
        self.on_open = on_open
        self.closed = []

    def round_opened(self, manifest: GlobalManifest) -> None:
        if self.exchange.list_answered_sites(manifest.round_index):
            return  # resumed: answers already there
        for site in self.sites:
            answer(self.exchange, manifest, site)
        if self.on_open:
            self.on_open(self.exchange, manifest)

    def round_closed(self, result) -> None:
        self.closed.append(result)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.on_sleep: Callable[[], None] | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep:
            self.on_sleep()


def run_loop(
    tmp_path: Path,
    config: FederationConfig,
    events: RoundEvents,
    fake: FakeTime | None = None,
    sites=SITES,
    owner="agg-1",
):
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), config.federation_id)
    fake = fake or FakeTime()
    loop = RoundLoop(
        exchange,
        FedAvgAggregator(),
        config,
        sites,
        initial_weights=INITIAL,
        events=events,
        clock=fake.clock,
        sleep=fake.sleep,
        owner_id=owner,
    )
    return loop.run(), exchange


def expected_model(sites: list[str], round_index: int = 1) -> dict[str, np.ndarray]:
    return weighted_mean([(honest_weights(s, round_index), num_examples(s)) for s in sites])


def final_model(exchange: Exchange, config: FederationConfig) -> dict[str, np.ndarray]:
    manifest = exchange.read_global_manifest(config.rounds + 1)
    assert manifest is not None and manifest.final
    return decode_weights(exchange.read_global_weights(manifest))


class Crash(BaseException):
    """Stands in for SIGKILL: nothing after it runs (``tests/integration`` kills real processes)."""
