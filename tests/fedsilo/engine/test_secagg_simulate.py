"""``fedsilo simulate`` under secure aggregation: keys, registrations, a whole federation."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.engine.process_engine import simulate
from fl_core.config import load_config
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.protocol import Exchange


@pytest.mark.slow
def test_simulated_federation_runs_under_secure_aggregation(tmp_path: Path) -> None:
    """Six hospitals in two worker processes, each answering for three (the FedAvg equality
    itself is proven in test_round.py; here: the simulation's keys and registrations)."""
    config = load_config(
        overrides={
            "rounds": 1,
            "data.synthetic.hospitals": 6,
            "data.synthetic.mean_stays": 60,
            "simulation.workers": 2,
            "privacy.secagg.enabled": True,
        }
    )
    result = simulate(config, tmp_path, run_id="secagg")
    assert [row.sites_accepted for row in result.rows] == [6]
    keys = sorted((result.run_dir / "hospital-keys").iterdir())
    assert len(keys) == 6 and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    exchange = Exchange(LocalDirectoryStore(result.run_dir / "exchange"), config.federation_id)
    assert all(r.secagg_public_key for r in exchange.list_registrations())
    assert exchange.store.exists(exchange.layout.secagg_global_key(1, "unmask"))
    assert not (result.run_dir / "exchange" / "hospital-keys").exists()  # keys stay local
