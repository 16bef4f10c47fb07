"""A federation's round loop on a local-directory exchange and a clock that moves only when
the loop sleeps: for tests whose hospitals answer from ``RoundEvents`` as each round opens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fl_core.config import load_config
from fl_core.exchange.protocol import Exchange
from fl_core.types import Weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop


class SteppedClock:
    now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run_offline(
    exchange: Exchange,
    sites: Sequence[str],
    initial: Weights,
    events: RoundEvents,
    overrides: Mapping[str, object] | None = None,
) -> str:
    """One training round and the final evaluation, a quorum of two; returns the phase."""
    config = load_config(
        overrides={
            "federation_id": "test",
            "rounds": 1,
            "round.min_sites": 2,
            "round.deadline_s": 100.0,
            "round.poll_interval_s": 1.0,
            "data.synthetic.hospitals": len(sites),
            **(overrides or {}),
        }
    )
    clock = SteppedClock()
    loop = RoundLoop(
        exchange,
        FedAvgAggregator(),
        config,
        list(sites),
        initial_weights=initial,
        events=events,
        clock=clock.time,
        sleep=clock.sleep,
        owner_id="agg-1",
    )
    return loop.run().phase
