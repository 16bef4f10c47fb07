"""A whole federation in one process: the round loop, and real hospitals answering each round.

Hospitals answer as a round opens (``fedsilo.engine.inline.InlineHospitals``), so nothing waits on
wall time and no worker process pays for importing torch. Everything else is the production
path: the local-directory exchange, admission, the strategy's aggregator, ``answer_round``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.engine.app import DEFAULT_APP, build_source
from fedsilo.engine.federation import initial_model_weights
from fedsilo.engine.inline import HospitalsFor, InlineHospitals
from fl_client.hospital import Hospital
from fl_core.config import FederationConfig, load_config
from fl_core.data.standardise import FeatureMoments
from fl_core.data.synthetic import SyntheticSource
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import decode_weights
from fl_server.round_loop import RoundLoop
from fl_server.strategies import build_aggregator
from tests.fl_client._private_hospitals import HOSPITALS, MEAN_STAYS


def small_config(**overrides: Any) -> FederationConfig:
    """A few small non-IID synthetic hospitals, a few rounds, a small MLP, CPU."""
    base: dict[str, Any] = {
        "federation_id": "clientstrat",
        "rounds": 3,
        "seed": 3,
        "data.synthetic.hospitals": 4,
        "data.synthetic.mean_stays": 150,
        "evaluation.histogram_bins": 200,
        "round.min_sites": 2,
        "round.poll_interval_s": 0.01,
        "training.device": "cpu",
        "training.hidden_sizes": [16],
        "training.min_local_steps": 8,
        "training.local_epochs": 1,
    }
    base.update(overrides)
    return load_config(overrides=base)


@dataclass
class Federation:
    exchange: Exchange
    config: FederationConfig
    results: list[RoundResult]

    def global_weights(self, round_index: int) -> dict[str, np.ndarray]:
        manifest = self.exchange.read_global_manifest(round_index)
        assert manifest is not None
        return decode_weights(self.exchange.read_global_weights(manifest))

    def update_weights(self, round_index: int, site_id: str) -> dict[str, np.ndarray]:
        return decode_weights(self.exchange.read_update_weights(round_index, site_id))

    @property
    def final_auroc(self) -> float:
        evaluation = self.results[-1].evaluation
        assert evaluation is not None and evaluation.auroc is not None
        return evaluation.auroc


class AggregatorCrashError(Exception):
    """Raised from ``round_closed``: the aggregator dies after result.json, before state.json."""


class _Recorded(InlineHospitals):
    """Keeps each round's result; the aggregator crashes after ``crash_after_round``."""

    def __init__(
        self,
        exchange: Exchange,
        config: FederationConfig,
        hospitals_for: HospitalsFor,
        crash_after_round: int | None,
    ) -> None:
        super().__init__(exchange, config, hospitals_for)
        self.crash_after_round = crash_after_round
        self.results: list[RoundResult] = []

    def round_closed(self, result: RoundResult) -> None:
        self.results.append(result)
        if result.round_index == self.crash_after_round:
            raise AggregatorCrashError(f"simulated crash after round {result.round_index}")


def make_hospitals(config: FederationConfig, state_dir: Path | None = None) -> list[Hospital]:
    source = build_source(config)
    hospitals = []
    for site_id in source.site_ids():
        trainer = DEFAULT_APP.build_trainer(len(source.feature_names()), config)
        hospitals.append(Hospital(source.load_site(site_id), trainer, state_dir=state_dir))
    return hospitals


def initial_weights(config: FederationConfig) -> dict[str, np.ndarray]:
    """The first model as the simulation builds it, from every hospital's moments."""
    source = build_source(config)
    moments = [FeatureMoments.of(source.load_site(s).train.x) for s in source.site_ids()]
    return initial_model_weights(DEFAULT_APP, config, source.feature_names(), moments)


def run_federation(
    root: Path,
    config: FederationConfig,
    hospitals: HospitalsFor | None = None,
    crash_after_round: int | None = None,
) -> Federation:
    exchange = Exchange(LocalDirectoryStore(root / "exchange"), config.federation_id)
    fixed = [] if hospitals else make_hospitals(config)
    events = _Recorded(exchange, config, hospitals or (lambda _round: fixed), crash_after_round)
    sites = build_source(config).site_ids()
    loop = RoundLoop(
        exchange,
        build_aggregator(config),
        config,
        sites,
        initial_weights=initial_weights(config),
        events=events,
        owner_id="test-aggregator",  # a restarted one takes over its own lease at once
    )
    loop.run()
    return Federation(exchange, config, events.results)


class Kit:
    """What the tests use (conftest functions are not importable under importlib mode)."""

    config = staticmethod(small_config)
    hospitals = staticmethod(make_hospitals)
    run = staticmethod(run_federation)
    crash = AggregatorCrashError


@pytest.fixture(scope="session")
def kit() -> Kit:
    return Kit()


@pytest.fixture(scope="session")
def source() -> SyntheticSource:
    """The privacy tests' hospitals: a few synthetic sites of a few hundred rows."""
    return SyntheticSource(HOSPITALS, MEAN_STAYS, 0)
