"""A small federation run in one process whose hospitals keep receipts in a state folder.

The real round loop, admission and hospital code over any exchange (a local folder or S3 on
moto), as ``fedsilo.engine.inline.run_inline`` runs them, with each hospital given
``state_dir`` so that it records what ``fedsilo ledger verify --site-id`` checks.
"""

from __future__ import annotations

from pathlib import Path

from fedsilo.engine.app import FederatedApp, build_source
from fedsilo.engine.federation import initial_model_weights
from fedsilo.engine.inline import InlineHospitals
from fl_client.hospital import Hospital
from fl_core.config import FederationConfig, load_config
from fl_core.data.standardize import FeatureMoments
from fl_core.exchange.protocol import Exchange
from fl_server.round_loop import RoundLoop


def small_config(rounds: int = 2, hospitals: int = 3) -> FederationConfig:
    """A federation that trains in about a second: few stays, few rounds."""
    return load_config(
        overrides={
            "rounds": rounds,
            "data.synthetic.hospitals": hospitals,
            "data.synthetic.mean_stays": 60,
        }
    )


def run_witnessed(config: FederationConfig, exchange: Exchange, state_dir: Path) -> None:
    """Run ``config`` to its final evaluation over ``exchange``; receipts go to ``state_dir``."""
    app = FederatedApp()
    source = build_source(config)
    sites = [source.load_site(site_id) for site_id in source.site_ids()]
    num_features = len(sites[0].feature_names)
    trainer = app.build_trainer(num_features, config)
    hospitals = [Hospital(data=site, trainer=trainer, state_dir=state_dir) for site in sites]
    initial = initial_model_weights(
        app, config, num_features, [FeatureMoments.of(site.train.x) for site in sites]
    )
    RoundLoop(
        exchange,
        app.aggregator(config),
        config,
        [site.site_id for site in sites],
        initial_weights=initial,
        events=InlineHospitals(exchange, config, lambda _round: hospitals),
    ).run()
