"""What every way of running a federation shares: set-up, the aggregator's rounds, the run files.

The process engine, the MPI engine and ``server run`` differ only in where the hospitals
live; each needs the same set-up (load the app, start the run folder, open the exchange,
build the data source, place the sites, register secure-aggregation keys) and the same
ending (final model and metrics.jsonl from the exchange). ``prepare_federation`` and
``finish_run`` are that set-up and ending, once. Nothing here starts a process, so the
deployed path (``fedsilo.engine.services``) imports this module and never an engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from fedsilo.engine.app import DEFAULT_APP, FederatedApp, build_source, load_app
from fedsilo.engine.final_model import published_model_bytes
from fedsilo.engine.gc_policy import freeze_start_up
from fedsilo.engine.logs import LogFormat
from fedsilo.engine.metrics_row import MetricsRow, write_metrics
from fedsilo.engine.model_start import start_model
from fedsilo.engine.placement import place_sites
from fedsilo.engine.run_folder import start_run
from fedsilo.engine.secagg_keys import key_path, load_key, register_simulated_sites
from fl_core.config import FederationConfig
from fl_core.data.base import DataSource
from fl_core.data.standardise import FeatureMoments
from fl_core.errors import ConfigError
from fl_core.exchange.manifests import RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_core.serialisation import decode_weights
from fl_core.site_policy import SitePolicy
from fl_core.types import SiteId
from fl_server.moments import gather_moments
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop

if TYPE_CHECKING:
    # the hospitals' side and the first model need torch; an aggregator resuming a
    # FedAvg federation imports neither
    from fl_client.hospital import Hospital

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class PreparedFederation:
    """A federation ready to run: its app, run folder, exchange, data and hospitals."""

    config: FederationConfig
    app: FederatedApp
    run_dir: Path
    exchange_uri: str
    exchange: Exchange
    source: DataSource
    sites: list[SiteId]
    secagg_key_dir: Path | None
    """Each simulated hospital's secure-aggregation key, registered as ``onboard approve`` would."""
    started: float = field(default_factory=time.monotonic)

    def placement(self, hosts: int) -> list[tuple[SiteId, ...]]:
        """The sites each of ``hosts`` hosts serves (balanced by expected training time)."""
        return place_sites(self.source, hosts, self.config.training)

    def num_features(self) -> int:
        return len(self.source.feature_names())

    def run_rounds(self, events: RoundEvents | None = None, sleep: Sleep = time.sleep) -> None:
        """The aggregator's side of the whole federation (see ``run_rounds``)."""
        features = self.source.feature_names()
        run_rounds(self.app, self.config, self.exchange, self.sites, features, events, sleep)

    def finish(self) -> SimulationResult:
        """The run folder's final model and metrics.jsonl (see ``finish_run``)."""
        return finish_run(self.exchange, self.config, self.run_dir, self.exchange_uri, self.started)


class RunOptions(TypedDict, total=False):
    """What an engine's ``simulate`` takes besides the config and the output folder.

    One definition for the process and the MPI engine, so the CLI, tests and benchmarks drive
    both alike (``simulate(config, out_dir, app=..., run_id=...)``).
    """

    app: FederatedApp | None
    """The user's app (default: fedsilo's tabular model, trainer and strategy table)."""
    app_ref: str | None
    """Or where it lies (``FILE.py:NAME``), for hospital processes to import it themselves."""
    events: SimulationEvents | None
    """Round hooks (the CLI's progress bar); default: collect the rows only."""
    log_format: LogFormat
    log_level: str
    run_id: str | None
    """The run folder's name under the output folder (default: time, federation, seed, pid)."""
    site_policies: dict[SiteId, SitePolicy]
    """The site policy each simulated hospital enforces (``fedsilo.engine.site_policies``)."""


def prepare_federation(
    config: FederationConfig, out_dir: Path, options: RunOptions
) -> PreparedFederation:
    """Everything an engine needs before it starts hosting hospitals."""
    started = time.monotonic()
    app, app_ref = options.get("app"), options.get("app_ref")
    if app is None:
        app = DEFAULT_APP if app_ref is None else load_app(app_ref)
    run_dir, exchange_uri = start_run(config, out_dir, options.get("run_id"))
    exchange = open_exchange(exchange_uri, config)
    source = build_source(config)
    sites = source.site_ids()
    key_dir = run_dir / "hospital-keys" if config.privacy.secagg.enabled else None
    if key_dir is not None:
        register_simulated_sites(exchange, sites, key_dir)
    return PreparedFederation(
        config=config,
        app=app,
        run_dir=run_dir,
        exchange_uri=exchange_uri,
        exchange=exchange,
        source=source,
        sites=sites,
        secagg_key_dir=key_dir,
        started=started,
    )


def open_exchange(uri: str | None, config: FederationConfig) -> Exchange:
    """The federation's exchange at ``uri`` with the config's endpoint and KMS key."""
    if uri is None:
        raise ConfigError("exchange.uri is not set; pass --exchange s3://bucket/prefix")
    store = open_store(
        uri, endpoint_url=config.exchange.endpoint_url, kms_key_id=config.exchange.kms_key_id
    )
    return Exchange(store, config.federation_id, config.exchange.ledger_retention_days)


def load_hospitals(
    app: FederatedApp,
    config: FederationConfig,
    site_ids: Sequence[SiteId],
    secagg_key_dir: Path | None = None,
    state_dir: Path | None = None,
) -> list[Hospital]:
    """Load the hosted sites; one trainer (one model in memory) serves them all in turn.

    Shared by both engines and ``client run`` so a hospital is set up alike whatever hosts it.
    """
    from fl_client.hospital import Hospital

    source = build_source(config)
    trainer = app.build_trainer(len(source.feature_names()), config)
    return [
        Hospital(
            data=source.load_site(site_id),
            trainer=trainer,
            state_dir=state_dir,
            secagg_key=load_key(key_path(secagg_key_dir, site_id)) if secagg_key_dir else None,
        )
        for site_id in site_ids
    ]


class SimulationEvents(RoundEvents):
    """Collects per-round rows; the CLI subclasses it to draw progress."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.results: dict[int, RoundResult] = {}
        self.rows: list[MetricsRow] = []

    def round_closed(self, result: RoundResult) -> None:
        self.results[result.round_index] = result
        previous = self.results.get(result.round_index - 1)
        if previous is not None and previous.task == "train":
            row = metrics_row(previous, result)
            self.rows.append(row)
            self.row_ready(row)

    def row_ready(self, row: MetricsRow) -> None:
        """A round's metrics are known (one round later: the next round evaluates its model)."""


def metrics_row(trained: RoundResult, evaluated: RoundResult) -> MetricsRow:
    """One metrics.jsonl line: round ``r``'s counts with the evaluation of the model it made."""
    return MetricsRow.of(trained, evaluated)


def rows_from_exchange(exchange: Exchange, rounds: int) -> list[MetricsRow]:
    """Rebuild every metrics row from result.json files (the source of truth)."""
    rows = []
    for round_index in range(1, rounds + 1):
        trained = exchange.read_result(round_index)
        evaluated = exchange.read_result(round_index + 1)
        if trained is not None and evaluated is not None:
            rows.append(metrics_row(trained, evaluated))
    return rows


@dataclass(frozen=True)
class SimulationResult:
    run_dir: Path
    rows: list[MetricsRow]
    final_weights: dict[str, np.ndarray]
    exchange_uri: str
    seconds: float


def initial_model_weights(
    app: FederatedApp,
    config: FederationConfig,
    feature_names: Sequence[str],
    moments: list[FeatureMoments],
) -> dict[str, np.ndarray]:
    """Round 1's model: the app's model at the config's seed, started by ``start_model``."""
    import torch

    from fl_core.models import model_weights

    torch.manual_seed(config.seed)
    model = app.model(len(feature_names), config)
    start_model(model, config, feature_names, moments)
    return model_weights(model)


def first_model(
    app: FederatedApp,
    config: FederationConfig,
    exchange: Exchange,
    sites: list[SiteId],
    feature_names: Sequence[str],
    sleep: Sleep = time.sleep,
) -> dict[str, np.ndarray]:
    """Gather the hospitals' feature moments through the exchange, then build round 1's model."""
    moments = gather_moments(exchange, sites, len(feature_names), config, sleep=sleep)
    return initial_model_weights(app, config, feature_names, moments)


def run_rounds(
    app: FederatedApp,
    config: FederationConfig,
    exchange: Exchange,
    sites: list[SiteId],
    features: Sequence[str],
    events: RoundEvents | None = None,
    sleep: Sleep = time.sleep,
    *,
    resume: bool = False,
) -> None:
    """The aggregator's side: the first model (unless resuming), then every round.

    ``features``: the model's inputs, published in the study hospitals approve. ``resume``:
    the exchange already holds the federation's state, so the rounds continue from it and no
    first model is built.
    """
    initial = None if resume else first_model(app, config, exchange, sites, features, sleep)
    loop = RoundLoop(
        exchange,
        app.aggregator(config),
        config,
        sites,
        initial_weights=initial,
        events=events,
        sleep=sleep,
        features=features,
    )
    freeze_start_up()
    loop.run()


def finish_run(
    exchange: Exchange,
    config: FederationConfig,
    run_dir: Path,
    exchange_uri: str,
    started: float,
) -> SimulationResult:
    """Write the final model and metrics.jsonl from what the exchange holds."""
    published = published_model_bytes(exchange, config.rounds)  # recalibrated, no controls
    (run_dir / "model.safetensors").write_bytes(published)  # the exchange's very bytes
    final_weights = decode_weights(published)
    rows = rows_from_exchange(exchange, config.rounds)
    write_metrics(run_dir / "metrics.jsonl", rows)
    return SimulationResult(
        run_dir=run_dir,
        rows=rows,
        final_weights=final_weights,
        exchange_uri=exchange_uri,
        seconds=time.monotonic() - started,
    )
