"""``fedsilo simulate``: a whole federation on this machine over a real exchange.

The aggregator runs in this process; the hospitals run in a bounded pool of worker processes
(default one per core), each hosting several hospitals in turn. Workers and aggregator share
nothing but the exchange store, exactly as hospitals and the coordinating centre do.

Before round 1 every hospital reports its feature moments (counts and sums per feature,
never rows) through the exchange, as in a deployment; the aggregator combines them into the
first model's standardisation buffers.
"""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from fedsilo.gc_policy import collect_in_child, freeze_start_up
from fedsilo.logs import LogFormat, configure_logging
from fedsilo.placement import place_sites
from fedsilo.round_signal import RoundSignal, WorkerNotifier
from fedsilo.run_folder import start_run
from fedsilo.runner import DEFAULT_APP, FederatedApp, build_source, load_app
from fedsilo.secagg_keys import key_path, load_key, register_simulated_sites
from fedsilo.worker_pool import worker_context
from fl_client.hospital import Hospital, serve_sites
from fl_core.config import FederationConfig
from fl_core.control_variates import split_controls
from fl_core.data.standardize import FeatureMoments, combine_moments
from fl_core.errors import FedsiloError
from fl_core.exchange.manifests import Decision, GlobalManifest, RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_core.models import model_weights
from fl_core.serialization import decode_weights, encode_weights
from fl_server.moments import gather_moments
from fl_server.round_loop import RoundEvents, RoundLoop

log = structlog.get_logger("fedsilo.simulate")


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    config: FederationConfig
    exchange_uri: str
    endpoint_url: str | None
    site_ids: tuple[str, ...]
    app_ref: str | None
    app: FederatedApp | None
    log_format: LogFormat
    log_level: str
    run_id: str
    secagg_key_dir: Path | None = None


def _worker_main(spec: WorkerSpec, reports: Any, signal: RoundSignal) -> None:
    """A hospital worker: load its sites, report their moments, answer rounds until final."""
    collect_in_child()
    torch.set_num_threads(1)
    configure_logging(spec.log_format, spec.log_level)
    structlog.contextvars.bind_contextvars(run_id=spec.run_id, worker=spec.index)
    try:
        app = spec.app if spec.app is not None else load_app(spec.app_ref)
        hospitals = load_hospitals(app, spec.config, spec.site_ids, spec.secagg_key_dir)
        exchange = open_exchange(spec.exchange_uri, spec.config)
        freeze_start_up()
        served = serve_sites(
            exchange,
            hospitals,
            spec.config,
            spec.config.simulation.client_timeout_s,
            WorkerNotifier(signal, reports, spec.index),
        )
        reports.put(("done", spec.index, served))
    except FedsiloError as err:
        reports.put(("error", spec.index, str(err)))
        raise SystemExit(err.exit_code) from None


def load_hospitals(
    app: FederatedApp,
    config: FederationConfig,
    site_ids: Sequence[str],
    secagg_key_dir: Path | None = None,
) -> list[Hospital]:
    """Load the hosted sites; one trainer (one model in memory) serves them all in turn.

    Shared by the process and MPI engines so a hospital is set up alike whatever hosts it.
    """
    source = build_source(config)
    trainer = app.build_trainer(len(source.feature_names()), config)
    return [
        Hospital(
            data=source.load_site(site_id),
            trainer=trainer,
            secagg_key=load_key(key_path(secagg_key_dir, site_id)) if secagg_key_dir else None,
        )
        for site_id in site_ids
    ]


def open_exchange(uri: str, config: FederationConfig) -> Exchange:
    """The federation's exchange at ``uri`` with the config's endpoint and KMS key."""
    store = open_store(
        uri, endpoint_url=config.exchange.endpoint_url, kms_key_id=config.exchange.kms_key_id
    )
    return Exchange(store, config.federation_id)


class SimulationEvents(RoundEvents):
    """Collects per-round rows; the CLI subclasses it to draw progress."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.results: dict[int, RoundResult] = {}
        self.rows: list[dict[str, Any]] = []

    def round_closed(self, result: RoundResult) -> None:
        self.results[result.round_index] = result
        previous = self.results.get(result.round_index - 1)
        if previous is not None and previous.task == "train":
            row = metrics_row(previous, result)
            self.rows.append(row)
            self.row_ready(row)

    def row_ready(self, row: dict[str, Any]) -> None:
        """A round's metrics are known (one round later: the next round evaluates its model)."""


def metrics_row(trained: RoundResult, evaluated: RoundResult) -> dict[str, Any]:
    """One metrics.jsonl line: round ``r``'s counts with the evaluation of the model it made."""
    evaluation = evaluated.evaluation
    return {
        "round": trained.round_index,
        "auroc": evaluation.auroc if evaluation else None,
        "auprc": evaluation.auprc if evaluation else None,
        "loss": evaluation.loss if evaluation else None,
        "train_loss": trained.train_loss,
        "sites_accepted": len(trained.accepted),
        "sites_rejected": len(trained.rejected),
        "sites_missing": len(trained.missing),
        "seconds": round(trained.closed_unix - trained.started_unix, 3),
        "reference_auroc": evaluation.reference_auroc if evaluation else {},
        "calibration": (
            evaluation.calibration.model_dump() if evaluation and evaluation.calibration else None
        ),
        "reference_calibration": (
            {k: v.model_dump() for k, v in evaluation.reference_calibration.items()}
            if evaluation
            else {}
        ),
        "eval_sites": evaluation.num_sites if evaluation else 0,
    }


def rows_from_exchange(exchange: Exchange, rounds: int) -> list[dict[str, Any]]:
    """Rebuild every metrics row from result.json files (the source of truth)."""
    rows = []
    for round_index in range(1, rounds + 1):
        trained = exchange.read_result(round_index)
        evaluated = exchange.read_result(round_index + 1)
        if trained is not None and evaluated is not None:
            rows.append(metrics_row(trained, evaluated))
    return rows


class _AnnouncingEvents(RoundEvents):
    """The caller's events, plus waking the workers when a round opens."""

    def __init__(self, inner: RoundEvents, signal: RoundSignal) -> None:
        self.inner = inner
        self.signal = signal

    def round_opened(self, manifest: GlobalManifest) -> None:
        self.signal.publish(manifest.round_index)
        self.inner.round_opened(manifest)

    def decided(self, round_index: int, decision: Decision) -> None:
        self.inner.decided(round_index, decision)

    def round_closed(self, result: RoundResult) -> None:
        self.inner.round_closed(result)


def _watching_sleep(procs: list[Any], reports: Any) -> Any:
    """The aggregator's sleep, which also notices hospital workers that failed.

    Without it a federation whose workers all crashed would wait for deadlines and
    extensions before failing; with it the simulation stops at once and says why. A worker
    that has answered a round (``round_signal.ANSWERED``) ends the sleep early, so the
    aggregator lists the answers at once instead of on its next poll.
    """

    def sleep(seconds: float) -> None:
        try:
            kind, who, payload = reports.get(timeout=seconds)
        except queue.Empty:
            kind = None
        if kind == "error":
            raise FedsiloError(f"hospital worker {who} failed: {payload}")
        crashed = [p for p in procs if p.exitcode not in (None, 0)]
        if crashed and all(p.exitcode is not None for p in procs):
            codes = ", ".join(f"{p.name}: {p.exitcode}" for p in crashed)
            raise FedsiloError(f"every hospital worker has exited ({codes}); see the log above")

    return sleep


@dataclass(frozen=True)
class SimulationResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    final_weights: dict[str, np.ndarray]
    exchange_uri: str
    seconds: float


def run_rounds(
    app: FederatedApp,
    config: FederationConfig,
    exchange: Exchange,
    sites: list[str],
    num_features: int,
    events: RoundEvents,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """The aggregator's side: gather the moments, build the first model, run every round."""
    moments = gather_moments(exchange, sites, num_features, config, sleep=sleep)
    initial = initial_model_weights(app, config, num_features, moments)
    loop = RoundLoop(
        exchange,
        app.aggregator(config),
        config,
        sites,
        initial_weights=initial,
        events=events,
        sleep=sleep,
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
    final_manifest = exchange.read_global_manifest(config.rounds + 1)
    if final_manifest is None:
        raise FedsiloError("the federation ended without a final model; see the log")
    final_bytes = exchange.read_global_weights(final_manifest)
    final_weights, controls = split_controls(decode_weights(final_bytes))
    if controls:  # SCAFFOLD's c stays in the exchange; the run's model is the model alone
        final_bytes = encode_weights(final_weights)
    (run_dir / "model.safetensors").write_bytes(final_bytes)
    rows = rows_from_exchange(exchange, config.rounds)
    with open(run_dir / "metrics.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return SimulationResult(
        run_dir=run_dir,
        rows=rows,
        final_weights=final_weights,
        exchange_uri=exchange_uri,
        seconds=time.monotonic() - started,
    )


def initial_model_weights(
    app: FederatedApp,
    config: FederationConfig,
    num_features: int,
    moments: list[FeatureMoments],
) -> dict[str, np.ndarray]:
    torch.manual_seed(config.seed)
    model = app.model(num_features, config)
    set_standardisation = getattr(model, "set_standardisation", None)
    if callable(set_standardisation):
        mean, std = combine_moments(moments)
        set_standardisation(mean, std)
    return model_weights(model)


def simulate(
    config: FederationConfig,
    out_dir: Path,
    *,
    app: FederatedApp | None = None,
    app_ref: str | None = None,
    events: SimulationEvents | None = None,
    log_format: LogFormat = "auto",
    log_level: str = "WARNING",
    run_id: str | None = None,
) -> SimulationResult:
    """Run a federation to the end; returns where its files are and its metrics."""
    started = time.monotonic()
    context = worker_context()
    if app is None:
        app = DEFAULT_APP if app_ref is None else load_app(app_ref)
    run_dir, exchange_uri = start_run(config, out_dir, run_id)
    exchange = open_exchange(exchange_uri, config)
    source = build_source(config)
    sites = source.site_ids()
    workers = min(config.simulation.workers or os.cpu_count() or 1, len(sites))
    plan = place_sites(source, workers, config.training)
    key_dir = run_dir / "hospital-keys" if config.privacy.secagg.enabled else None
    if key_dir is not None:  # each hospital's key, registered as `onboard approve` would
        register_simulated_sites(exchange, sites, key_dir)
    reports = context.Queue()
    signal = RoundSignal(context)
    procs = []
    for index in range(workers):
        spec = WorkerSpec(
            index=index,
            config=config,
            exchange_uri=exchange_uri,
            endpoint_url=config.exchange.endpoint_url,
            site_ids=plan[index],
            app_ref=app_ref,
            app=None if app_ref else app,
            log_format=log_format,
            log_level=log_level,
            run_id=run_dir.name,
            secagg_key_dir=key_dir,
        )
        proc = context.Process(
            target=_worker_main,
            args=(spec, reports, signal),
            daemon=True,
            name=f"fedsilo-hospitals-{index}",
        )
        proc.start()
        procs.append(proc)
    events = events or SimulationEvents(config.rounds)
    try:
        num_features = len(source.feature_names())
        sleep = _watching_sleep(procs, reports)
        announcing = _AnnouncingEvents(events, signal)
        run_rounds(app, config, exchange, sites, num_features, announcing, sleep)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    return finish_run(exchange, config, run_dir, exchange_uri, started)


__all__ = ["SimulationEvents", "SimulationResult", "encode_weights", "simulate"]
