"""The one owner of ``state.json``: its etag, the aggregator's lease and the checkpoints.

``state.json`` is only ever replaced with the etag last read (compare-and-swap) and carries a
lease, so two aggregators can never both advance a round: a live owner renews its lease, a
dead one's lapses and another aggregator takes over. Every other part of the aggregator
(the round loop, secure aggregation) changes the federation's state through a
``FederationState`` transition and hands it here to be written.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from fl_core.config import RoundConfig
from fl_core.errors import (
    ConfigError,
    ExchangeError,
    FederationLockedError,
    PreconditionFailedError,
    RoundFailedError,
)
from fl_core.exchange.manifests import FederationState
from fl_core.exchange.protocol import Exchange
from fl_core.types import ETag

log = structlog.get_logger("fedsilo.server")


class StateKeeper:
    """Reads, creates, takes over and writes one federation's ``state.json``."""

    def __init__(
        self,
        exchange: Exchange,
        settings: RoundConfig,
        owner_id: str,
        config_hash: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.exchange = exchange
        self.settings = settings
        self.owner_id = owner_id
        self.config_hash = config_hash
        self.clock = clock
        self.sleep = sleep
        self._etag: ETag | None = None
        self._last_write = 0.0
        self._saved: FederationState | None = None

    # ---- writing --------------------------------------------------------------------------

    def save(self, state: FederationState) -> FederationState:
        """Compare-and-swap ``state`` with our lease renewed; losing the race is fatal."""
        now = self.clock()
        renewed = state.leased(self.owner_id, now + self.settings.lease_s)
        try:
            self._etag = self.exchange.write_state(renewed, self._etag)
        except PreconditionFailedError as err:
            self._check_not_altered(err)
            raise FederationLockedError(
                f"another aggregator took over federation {self.exchange.federation_id}; "
                "this one stops (only one aggregator may run per federation)"
            ) from err
        self._last_write = now
        self._saved = renewed
        return renewed

    def keep_alive(self, state: FederationState) -> FederationState:
        """Renew the lease while a step waits (a third of the lease between writes)."""
        if self.clock() - self._last_write > self.settings.lease_s / 3:
            return self.save(state)
        return state

    def checkpoint(self, state: FederationState) -> FederationState:
        """Write ``state`` if it changed and ``checkpoint_interval_s`` has passed since the
        last write, or if the lease needs renewing; otherwise keep it in memory only (a
        crash re-admits what was not written, from the write-once answers)."""
        changed = state is not self._saved
        if changed and self.clock() - self._last_write >= self.settings.checkpoint_interval_s:
            return self.save(state)
        return self.keep_alive(state)

    def fail(self, state: FederationState, message: str) -> RoundFailedError:
        """Record the federation as failed with ``message``; the caller raises the error."""
        self.save(state.failed(message))
        return RoundFailedError(message)

    # ---- taking hold ----------------------------------------------------------------------

    def acquire(self, create: Callable[[], FederationState]) -> FederationState:
        """The federation's state, held by us: created with ``create()`` when there is none,
        or taken over once its owner's lease has lapsed."""
        found = self.exchange.read_state()
        if found is None:
            try:
                return self.save(create())
            except FederationLockedError:
                found = self.exchange.read_state()
                if found is None:
                    raise
        state, etag = found
        if state.config_hash != self.config_hash:
            raise ConfigError(
                f"federation {state.federation_id} was started with another config "
                f"(hash {state.config_hash[:12]}); rerun with the same config or a new "
                "federation_id"
            )
        state, etag = self._wait_for_lease(state, etag)
        self._etag = etag
        if state.phase != "collecting":
            return state
        log.info("federation_resumed", round_index=state.round_index, previous=state.owner_id)
        return self.save(state)

    def _wait_for_lease(self, state: FederationState, etag: ETag) -> tuple[FederationState, ETag]:
        """A live owner renews its lease; a dead one's lease lapses and we take over."""
        while (
            state.phase == "collecting"
            and state.owner_id != self.owner_id
            and state.lease_expires_unix > self.clock()
        ):
            self.sleep(min(self.settings.poll_interval_s * 4, 1.0))
            found = self.exchange.read_state()
            if found is None:
                raise ExchangeError("state.json vanished while waiting for the lease")
            if found[1] != etag:
                raise FederationLockedError(
                    f"federation {state.federation_id} is run by aggregator {found[0].owner_id} "
                    "(its lease keeps being renewed); stop that one first, only one may run"
                )
            state, etag = found
        return state, etag

    def _check_not_altered(self, err: PreconditionFailedError) -> None:
        """Our compare-and-swap failed: a rival took over, unless state.json was deleted or
        rolled back to an earlier version of ours (an emptied bucket, deleted versions)."""
        if self._etag is None:
            return  # creating: whoever wrote it first is the rival
        found = self.exchange.read_state()
        where = self.exchange.describe()
        federation = self.exchange.federation_id
        if found is None:
            raise ExchangeError(
                f"state.json of federation {federation} vanished from {where}; it was "
                "deleted: restore its last version (the bucket is versioned) and restart"
            ) from err
        if found[0].owner_id == self.owner_id:
            raise ExchangeError(
                f"state.json of federation {federation} in {where} was rolled back under this "
                "aggregator (it holds an earlier version of ours): the exchange was altered; "
                "restore its last version and restart"
            ) from err
