"""``StateKeeper``: the one writer of ``state.json`` (lease, compare-and-swap, checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_core.config import RoundConfig
from fl_core.errors import ConfigError, FederationLockedError, RoundFailedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import Decision, FederationState
from fl_core.exchange.protocol import Exchange
from fl_server.state_keeper import StateKeeper

SETTINGS = RoundConfig(lease_s=30.0, checkpoint_interval_s=5.0, poll_interval_s=0.5)


class _Clock:
    """Time that moves only when the keeper sleeps or the test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _keeper(exchange: Exchange, clock: _Clock, owner: str, config_hash: str = "h") -> StateKeeper:
    return StateKeeper(exchange, SETTINGS, owner, config_hash, clock, clock.sleep)


def _new(keeper: StateKeeper) -> FederationState:
    return FederationState(
        federation_id="f",
        round_index=1,
        phase="collecting",
        started_unix=keeper.clock(),
        deadline_unix=keeper.clock() + 60,
        owner_id=keeper.owner_id,
        lease_expires_unix=0.0,
        config_hash=keeper.config_hash,
    )


@pytest.fixture()
def exchange(tmp_path: Path) -> Exchange:
    return Exchange(LocalDirectoryStore(tmp_path / "x", durable=False), "f")


def _stored(exchange: Exchange) -> FederationState:
    found = exchange.read_state()
    assert found is not None
    return found[0]


def test_creates_the_state_with_its_lease(exchange: Exchange) -> None:
    clock = _Clock()
    keeper = _keeper(exchange, clock, "a")
    state = keeper.acquire(lambda: _new(keeper))
    assert (state.owner_id, state.lease_expires_unix) == ("a", 1030.0)
    assert _stored(exchange) == state


def test_checkpoints_a_changed_state_at_its_cadence_and_renews_the_lease(
    exchange: Exchange,
) -> None:
    clock = _Clock()
    keeper = _keeper(exchange, clock, "a")
    state = keeper.acquire(lambda: _new(keeper))
    decided = Decision(site_id="s", status="declined", decided_unix=clock.now)
    changed = state.with_decisions({"s": decided})
    clock.now += 1.0
    assert keeper.checkpoint(changed) is changed  # before checkpoint_interval_s: memory only
    assert _stored(exchange).decisions == {}
    clock.now += 4.0
    written = keeper.checkpoint(changed)
    assert _stored(exchange).decisions == {"s": decided}
    assert written.lease_expires_unix == clock.now + 30.0
    clock.now += 9.0  # unchanged, lease still fresh: nothing written
    assert keeper.checkpoint(written) is written
    clock.now += 2.0  # a third of the lease since the last write: renewed
    renewed = keeper.checkpoint(written)
    assert renewed.lease_expires_unix == clock.now + 30.0 == _stored(exchange).lease_expires_unix


def test_a_live_owner_keeps_the_federation_and_a_lapsed_one_loses_it(
    exchange: Exchange,
) -> None:
    clock = _Clock()
    first = _keeper(exchange, clock, "a")
    first.acquire(lambda: _new(first))
    second = _keeper(exchange, clock, "b")

    def renew_while_waiting(seconds: float) -> None:
        clock.now += seconds
        found = exchange.read_state()
        assert found is not None
        first.save(found[0])

    second.sleep = renew_while_waiting
    with pytest.raises(FederationLockedError, match="run by aggregator a"):
        second.acquire(lambda: _new(second))
    third = _keeper(exchange, clock, "c")  # a sleeps from here on: its lease lapses
    taken = third.acquire(lambda: _new(third))
    assert taken.owner_id == "c" and clock.now >= 1030.0
    with pytest.raises(FederationLockedError, match="another aggregator took over"):
        first.save(taken)


def test_another_config_is_refused_and_a_failure_is_recorded(exchange: Exchange) -> None:
    clock = _Clock()
    keeper = _keeper(exchange, clock, "a")
    state = keeper.acquire(lambda: _new(keeper))
    with pytest.raises(ConfigError, match="started with another config"):
        _keeper(exchange, clock, "b", config_hash="other").acquire(lambda: state)
    error = keeper.fail(state, "round 1 closed below quorum")
    assert isinstance(error, RoundFailedError)
    assert (_stored(exchange).phase, _stored(exchange).message) == (
        "failed",
        "round 1 closed below quorum",
    )
