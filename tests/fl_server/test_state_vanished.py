"""An aggregator whose state.json is deleted under it says so, instead of blaming a rival.

Found by ``make chaos``: emptying the exchange bucket mid-run made the aggregator report
"another aggregator took over" (its compare-and-swap failed on a missing object).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fl_core.config import load_config
from fl_core.errors import ExchangeError, FederationLockedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop

INITIAL = {"w": np.zeros((3, 2), np.float32)}


class _Meddle(RoundEvents):
    """When round 1 opens: delete state.json, roll it back to an earlier version of the
    same aggregator, or replace it as a rival aggregator would."""

    def __init__(self, root: Path, exchange: Exchange, how: str) -> None:
        self.root, self.exchange, self.how = root, exchange, how

    def round_opened(self, manifest: GlobalManifest) -> None:
        path = self.root / self.exchange.layout.state_key()
        if self.how == "delete":
            path.unlink()
            return
        found = self.exchange.read_state()
        assert found is not None
        state = found[0]
        if self.how == "rival":
            changed = state.leased("rival", state.lease_expires_unix)
        else:  # an older version of ours: same owner, an older lease
            changed = state.leased(state.owner_id, state.lease_expires_unix - 1)
        self.exchange.write_state(changed, found[1])


def _loop(tmp_path: Path, how: str) -> RoundLoop:
    config = load_config(
        overrides={
            "federation_id": "test",
            "rounds": 1,
            "round.min_sites": 2,
            "round.poll_interval_s": 0.01,
            "round.lease_s": 0.1,
            "data.synthetic.hospitals": 2,
        }
    )
    root = tmp_path / "exchange"
    exchange = Exchange(LocalDirectoryStore(root), "test")
    events = _Meddle(root, exchange, how)
    sites = ["site-a", "site-b"]
    return RoundLoop(
        exchange, FedAvgAggregator(), config, sites, initial_weights=INITIAL, events=events
    )


def test_deleted_state_is_named_not_blamed_on_a_rival(tmp_path: Path) -> None:
    with pytest.raises(ExchangeError, match=r"state\.json of federation test vanished") as err:
        _loop(tmp_path, "delete").run()
    assert not isinstance(err.value, FederationLockedError)


def test_state_rolled_back_to_our_own_earlier_version_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExchangeError, match="was rolled back under this aggregator") as err:
        _loop(tmp_path, "rollback").run()
    assert not isinstance(err.value, FederationLockedError)


def test_a_rival_that_replaced_the_state_still_stops_the_loop(tmp_path: Path) -> None:
    with pytest.raises(FederationLockedError, match="only one aggregator may run"):
        _loop(tmp_path, "rival").run()
