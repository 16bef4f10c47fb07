"""``fedsilo server run`` / ``client run``: one aggregator or one hospital against a store.

These are what the ECS tasks run. Both need the federation's exchange URI; the hospital needs
its data (prepared folder or synthetic). The initial model of a brand-new federation comes
from the feature moments the hospitals report through the exchange before round 1; ``server
run`` gathers them (or resumes a federation that has state).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import structlog

from fedsilo.engine.app import DEFAULT_APP, build_source
from fedsilo.engine.federation import (
    SimulationEvents,
    finish_run,
    load_hospitals,
    open_exchange,
    run_rounds,
)
from fedsilo.engine.metrics_row import MetricsRow
from fedsilo.engine.run_folder import start_run
from fedsilo.engine.strategy_fit import fit_strategy
from fl_core.config import FederationConfig
from fl_core.errors import ConfigError
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.registry import activate_verified_sites
from fl_core.site_policy import SitePolicy

log = structlog.get_logger("fedsilo.server")


def invited_sites(exchange: Exchange, given: list[str], source_sites: list[str]) -> list[str]:
    """Who the aggregator invites: ``--sites``, else the registry's active hospitals, else the
    data source's sites (a federation run without onboarding, as in tests and benchmarks).

    Pending registrations whose preflight passed are activated first, so hospitals that ran
    ``fedsilo onboard check`` before the aggregator started are in its first round.
    """
    if given:
        return given
    activate_verified_sites(exchange, time.time())
    registrations = exchange.list_registrations()
    if not registrations:
        return source_sites
    active = sorted(r.site_id for r in registrations if r.status == "active")
    if not active:
        pending = sorted(r.site_id for r in registrations if r.status == "pending")
        raise ConfigError(
            f"the registry of federation {exchange.federation_id} has no active hospital "
            f"({len(pending)} pending: {', '.join(pending[:5]) or 'none'}); each hospital runs "
            "`fedsilo onboard check` first, or pass --sites"
        )
    return active


def require_secagg_keys(exchange: Exchange, config: FederationConfig, invited: list[str]) -> None:
    """Under secure aggregation every invited hospital's public key must be registered.

    Checked before the hospitals are asked for anything: found at round 1's roster instead,
    it stopped the federation after they had reported their moments and trained.
    """
    if not config.privacy.secagg.enabled:
        return
    keys = {r.site_id: r.secagg_public_key for r in exchange.list_registrations()}
    missing = [site for site in invited if not keys.get(site)]
    if missing:
        raise ConfigError(
            f"secure aggregation (--secure-aggregation, privacy.secagg): sites {missing[:5]} have "
            "no secagg public key in their "
            f"registration ({len(missing)} in all); onboard them (`fedsilo onboard request "
            "--state-dir DIR` makes the key, `approve` registers it) or turn it off"
        )


class RunTracking(Protocol):
    """Where a run's parameters, metrics rows and final files also go (MLflow)."""

    def open(self, config: FederationConfig, run_name: str) -> SimulationEvents:
        """Start the tracked run of ``config``; its events receive every round."""

    def finished(self, run_dir: Path, rows: Sequence[MetricsRow]) -> None:
        """The run folder is written: record its rows and files, and end the tracked run."""

    def stopped(self, status: str) -> None:
        """End the tracked run without a model (``FAILED``, or ``KILLED`` on Ctrl-C)."""


def run_server(
    config: FederationConfig,
    sites: list[str],
    out_dir: Path | None = None,
    tracking: RunTracking | None = None,
) -> FederationConfig:
    """Run the aggregator to the end; with ``out_dir``, write a run folder as simulate does.

    ``tracking`` (needs ``out_dir``) is opened under the run folder's name once the config is
    fitted. Returns the config it ran (its strategy quorum fitted to the invited hospitals).
    """
    if tracking is not None and out_dir is None:
        raise ConfigError("--mlflow logs the run folder's model and metrics.jsonl; add --out DIR")
    structlog.contextvars.bind_contextvars(run_id=config.federation_id)
    exchange = open_exchange(config.exchange.uri, config)
    source = build_source(config)
    invited = invited_sites(exchange, sites, source.site_ids())
    require_secagg_keys(exchange, config, invited)
    config, notes = fit_strategy(config, len(invited))
    for note in notes:
        log.warning("strategy_fitted", note=note)
    run = start_run(config, out_dir, None) if out_dir is not None else None
    started = time.monotonic()
    # a new federation's first model standardises with the hospitals' moments
    resume = exchange.read_state() is not None
    features = source.feature_names()
    events = None
    if tracking is not None and run is not None:
        events = tracking.open(config, run[0].name)
    try:
        run_rounds(DEFAULT_APP, config, exchange, invited, features, events, resume=resume)
    except KeyboardInterrupt:
        if tracking is not None:
            tracking.stopped("KILLED")
        raise
    except Exception:
        if tracking is not None:
            tracking.stopped("FAILED")
        raise
    if run is not None:
        result = finish_run(exchange, config, run[0], run[1], started)
        if tracking is not None:
            tracking.finished(result.run_dir, result.rows)
    return config


def run_client(
    config: FederationConfig,
    site_id: str,
    state_dir: Path | None = None,
    policy: SitePolicy | None = None,
) -> None:
    """Serve every round of one federation as hospital ``site_id``, under its site policy."""
    # the hospital's side (torch) is imported here, so that the aggregator starts without it
    from fedsilo.engine.site_policies import follow_policy
    from fl_client.hospital import serve_sites
    from fl_client.site_policy_gate import SiteGate

    structlog.contextvars.bind_contextvars(run_id=config.federation_id, site_id=site_id)
    gate = None if policy is None else SiteGate.open(policy, [site_id], state_dir)
    if policy is None:
        log.warning(
            "no_site_policy",
            detail="this hospital serves any study it is configured for; give it a site "
            "policy (--site-policy FILE, docs/site-policy.md) to approve studies itself",
        )
    exchange = open_exchange(config.exchange.uri, config)
    key_dir = None
    if config.privacy.secagg.enabled:  # made by `fedsilo onboard request --state-dir`
        if state_dir is None:
            raise ConfigError(
                "privacy.secagg needs --state-dir: the folder holding this "
                "hospital's key from `fedsilo onboard request`"
            )
        key_dir = state_dir
    hospitals = load_hospitals(DEFAULT_APP, config, [site_id], key_dir, state_dir)
    if gate is not None:
        for hospital in hospitals:
            follow_policy(hospital, gate)
    serve_sites(exchange, hospitals, config, config.simulation.client_timeout_s)
