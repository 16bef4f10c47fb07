"""A small federation run in one process whose hospitals keep receipts in a state folder.

The real round loop, admission and hospital code over any exchange (a local folder or S3 on
moto), as ``fedsilo.engine.inline.run_inline`` runs them, with each hospital given
``state_dir`` so that it records what ``fedsilo ledger verify --site-id`` checks.
"""

from __future__ import annotations

from pathlib import Path

from fedsilo.engine.app import FederatedApp, build_source
from fedsilo.engine.inline import inline_round_loop
from fl_core.config import FederationConfig, load_config
from fl_core.exchange.protocol import Exchange


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
    source = build_source(config)
    sites = [source.load_site(site_id) for site_id in source.site_ids()]
    inline_round_loop(exchange, config, sites, FederatedApp(), state_dir).run()
