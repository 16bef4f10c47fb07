"""``fedsilo simulate``: a whole federation on this machine over a real exchange.

The aggregator runs in this process; the hospitals run in a bounded pool of worker processes
(default one per core), each hosting several hospitals in turn. Workers and aggregator share
nothing but the exchange store, exactly as hospitals and the coordinating centre do.

Before round 1 every hospital reports its feature moments (counts and sums per feature,
never rows) through the exchange, as in a deployment; the aggregator combines them into the
first model's standardisation buffers.
"""

from __future__ import annotations

import os
import queue
import signal as signals
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Unpack

import structlog
import torch

from fedsilo.engine.app import FederatedApp, load_app
from fedsilo.engine.federation import (
    RunOptions,
    SimulationEvents,
    SimulationResult,
    Sleep,
    load_hospitals,
    open_exchange,
    prepare_federation,
)
from fedsilo.engine.gc_policy import collect_in_child, freeze_start_up
from fedsilo.engine.logs import LogFormat, configure_logging
from fedsilo.engine.round_signal import ANSWERED, Report, RoundSignal, WorkerNotifier
from fedsilo.engine.site_policies import POLICY_STATE_FOLDER, enforce_site_policies
from fedsilo.engine.worker_pool import worker_context
from fl_client.hospital import serve_sites
from fl_core.config import FederationConfig
from fl_core.errors import FedsiloError
from fl_core.exchange.manifests import Decision, GlobalManifest, RoundResult
from fl_core.site_policy import SitePolicy
from fl_core.types import SiteId
from fl_server.round_events import RoundEvents

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
    site_policies: Mapping[SiteId, SitePolicy] = field(default_factory=dict)
    """The policies of this worker's hospitals (``fedsilo.engine.site_policies``)."""
    policy_state_dir: Path | None = None
    """Where those policies keep each hospital's privacy ledger (in the run folder)."""
    interruptible: bool = True
    """Whether Ctrl-C stops the worker: as it stops the launcher, which ignores it when run as
    a background job of a script (the shell then ignores SIGINT for it, and so do its workers,
    else they would leave a federation that goes on without them)."""


def _leave_quietly(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _worker_main(spec: WorkerSpec, reports: Queue[Report], signal: RoundSignal) -> None:
    """A hospital worker: load its sites, report their moments, answer rounds until final.

    Ctrl-C reaches every process of the terminal's group: a worker leaves at once and
    quietly (the aggregator says where the run stopped), instead of printing a traceback.
    """
    signals.signal(signals.SIGINT, _leave_quietly if spec.interruptible else signals.SIG_IGN)
    collect_in_child()
    torch.set_num_threads(1)
    configure_logging(spec.log_format, spec.log_level)
    structlog.contextvars.bind_contextvars(run_id=spec.run_id, worker=spec.index)
    try:
        app = spec.app if spec.app is not None else load_app(spec.app_ref)
        hospitals = load_hospitals(app, spec.config, spec.site_ids, spec.secagg_key_dir)
        enforce_site_policies(hospitals, spec.site_policies, spec.policy_state_dir)
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


def _watching_sleep(procs: Sequence[BaseProcess], reports: Queue[Report]) -> Sleep:
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
        if kind == ANSWERED:
            return  # a worker that just answered is alive; the others are checked when quiet
        crashed = [p for p in procs if p.exitcode not in (None, 0)]
        if crashed and all(p.exitcode is not None for p in procs):
            codes = ", ".join(f"{p.name}: {p.exitcode}" for p in crashed)
            raise FedsiloError(f"every hospital worker has exited ({codes}); see the log above")

    return sleep


def simulate(
    config: FederationConfig, out_dir: Path, **options: Unpack[RunOptions]
) -> SimulationResult:
    """Run a federation to the end; returns where its files are and its metrics."""
    context = worker_context()
    federation = prepare_federation(config, out_dir, options)
    app_ref = options.get("app_ref")
    workers = min(config.simulation.workers or os.cpu_count() or 1, len(federation.sites))
    plan = federation.placement(workers)
    policies = options.get("site_policies", {})
    reports = context.Queue()
    signal = RoundSignal(context)
    procs = []
    for index in range(workers):
        spec = WorkerSpec(
            index=index,
            config=config,
            exchange_uri=federation.exchange_uri,
            endpoint_url=config.exchange.endpoint_url,
            site_ids=plan[index],
            app_ref=app_ref,
            app=None if app_ref else federation.app,
            log_format=options.get("log_format", "auto"),
            log_level=options.get("log_level", "WARNING"),
            run_id=federation.run_dir.name,
            secagg_key_dir=federation.secagg_key_dir,
            site_policies={s: policies[s] for s in plan[index] if s in policies},
            policy_state_dir=federation.run_dir / POLICY_STATE_FOLDER,
            interruptible=signals.getsignal(signals.SIGINT) is not signals.SIG_IGN,
        )
        proc = context.Process(
            target=_worker_main,
            args=(spec, reports, signal),
            daemon=True,
            name=f"fedsilo-hospitals-{index}",
        )
        proc.start()
        procs.append(proc)
    events = options.get("events") or SimulationEvents(config.rounds)
    try:
        federation.run_rounds(_AnnouncingEvents(events, signal), _watching_sleep(procs, reports))
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    return federation.finish()


__all__ = ["SimulationEvents", "SimulationResult", "simulate"]
