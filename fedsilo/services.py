"""``fedsilo server run`` / ``client run``: one aggregator or one hospital against a store.

These are what the ECS tasks run. Both need the federation's exchange URI; the hospital needs
its data (prepared folder or synthetic). The initial model of a brand-new federation comes
from the feature moments the hospitals report through the exchange before round 1; ``server
run`` gathers them (or resumes a federation that has state).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from fedsilo.runner import DEFAULT_APP, build_source
from fedsilo.secagg_keys import key_path, load_key
from fedsilo.simulation import initial_model_weights
from fl_client.hospital import Hospital, serve_sites
from fl_core.config import FederationConfig
from fl_core.errors import ConfigError
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_server.moments import gather_moments
from fl_server.round_loop import RoundLoop


def _exchange(config: FederationConfig) -> Exchange:
    if config.exchange.uri is None:
        raise ConfigError("exchange.uri is not set; pass --exchange s3://bucket/prefix")
    store = open_store(
        config.exchange.uri,
        endpoint_url=config.exchange.endpoint_url,
        kms_key_id=config.exchange.kms_key_id,
    )
    return Exchange(store, config.federation_id)


def run_server(config: FederationConfig, sites: list[str]) -> None:
    structlog.contextvars.bind_contextvars(run_id=config.federation_id)
    exchange = _exchange(config)
    source = build_source(config)
    invited = sites or source.site_ids()
    initial = None
    if exchange.read_state() is None:
        # a new federation: its first model standardises with the hospitals' moments
        num_features = len(source.feature_names())
        moments = gather_moments(exchange, invited, num_features, config)
        initial = initial_model_weights(DEFAULT_APP, config, num_features, moments)
    RoundLoop(
        exchange, DEFAULT_APP.aggregator(config), config, invited, initial_weights=initial
    ).run()


def run_client(config: FederationConfig, site_id: str, state_dir: Path | None = None) -> None:
    structlog.contextvars.bind_contextvars(run_id=config.federation_id, site_id=site_id)
    exchange = _exchange(config)
    source = build_source(config)
    data = source.load_site(site_id)
    trainer = DEFAULT_APP.build_trainer(len(source.feature_names()), config)
    key = None
    if config.privacy.secagg.enabled:  # made by `fedsilo onboard request --state-dir`
        if state_dir is None:
            raise ConfigError(
                "privacy.secagg needs --state-dir: the folder holding this "
                "hospital's key from `fedsilo onboard request`"
            )
        key = load_key(key_path(state_dir, site_id))
    serve_sites(
        exchange,
        [Hospital(data=data, trainer=trainer, state_dir=state_dir, secagg_key=key)],
        config,
        config.simulation.client_timeout_s,
    )
