"""Kill-and-resume with FedAdam: a federation stopped at any point of closing a round resumes
to the same final model, bit for bit, as one that was never interrupted.

FedAdam's moments advance in ``finish()`` and are saved in ``state.json`` with the next round.
The dangerous window is after ``result.json`` (and possibly the next global model) was
written but before ``state.json`` moved on: the resumed aggregator must re-run ``finish()``
so that the state it saves holds this round's moments, not the previous round's.

The crash is an exception raised right after each write of ``_close`` (it stands in for
SIGKILL: nothing after it runs in that aggregator; ``tests/integration`` kills processes).
Hospitals answer ``global + a site's step``, so a wrong global model or stale moments change
every later round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fl_core.config import FederationConfig
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import decode_weights
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop
from fl_server.strategies import build_aggregator
from tests.fl_server._round_harness import SITES, FakeTime, manifest_for, signed
from tests.fl_server._round_harness import make_config as round_loop_config

ROUNDS = 4
CRASH_ROUND = 2
INITIAL = {"w": np.full((4, 3), 0.1, np.float32), "b": np.zeros(3, np.float32)}


class Crash(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


FEDADAM = {"name": "fedadam", "server_learning_rate": 0.05}


def make_config(strategy: dict[str, object] | None = None) -> FederationConfig:
    """The round-loop tests' federation (fake clock, 4 sites) with a stateful strategy."""
    overrides = {"federation_id": "adam", "rounds": ROUNDS, "strategy": strategy or FEDADAM}
    return round_loop_config(**overrides)


class CrashingExchange(Exchange):
    """An exchange that raises ``Crash`` right after one chosen write of one round."""

    def __init__(self, store: LocalDirectoryStore, federation_id: str, point: str | None):
        super().__init__(store, federation_id)
        self.point = point

    def _maybe_crash(self, point: str, round_index: int) -> None:
        if self.point == point and round_index == CRASH_ROUND:
            self.point = None
            raise Crash(point)

    def write_result(self, result):  # type: ignore[no-untyped-def]
        super().write_result(result)
        self._maybe_crash("after_result", result.round_index)

    def write_ledger_entry(self, entry):  # type: ignore[no-untyped-def]
        super().write_ledger_entry(entry)
        self._maybe_crash("after_ledger", entry.round_index)

    def publish_global(self, weights, manifest):  # type: ignore[no-untyped-def]
        super().publish_global(weights, manifest)
        self._maybe_crash("after_next_global", manifest.round_index - 1)

    def write_state(self, state, etag):  # type: ignore[no-untyped-def]
        written = super().write_state(state, etag)
        if not state.decisions:  # the save that moves to the next round (or finishes)
            self._maybe_crash("after_state", state.round_index - 1)
        return written


class Hospitals(RoundEvents):
    """Every site answers ``global + its own step`` as soon as a round opens."""

    def __init__(self, exchange: Exchange):
        self.exchange = exchange

    def round_opened(self, manifest: GlobalManifest) -> None:
        if self.exchange.list_answered_sites(manifest.round_index):
            return  # resumed: the answers are already there
        global_weights = decode_weights(self.exchange.read_global_weights(manifest))
        for index, site in enumerate(SITES):
            rng = np.random.default_rng([index, manifest.round_index])
            weights = None
            if manifest.task == "train":
                weights = {  # sorted: decoded tensors come in no fixed order
                    name: (
                        global_weights[name]
                        + rng.normal(0.1 * (index + 1), 0.05, global_weights[name].shape)
                    ).astype(np.float32)
                    for name in sorted(global_weights)
                }
            update = manifest_for(manifest, site)
            data = None if weights is None else signed(weights, update)
            self.exchange.write_update(update, data)


def run(root: Path, config: FederationConfig, point: str | None, owner: str, fake: FakeTime):
    exchange = CrashingExchange(LocalDirectoryStore(root), config.federation_id, point)
    loop = RoundLoop(
        exchange,
        build_aggregator(config),  # a fresh aggregator, as a restarted process builds
        config,
        SITES,
        initial_weights=INITIAL,
        events=Hospitals(exchange),
        clock=fake.clock,
        sleep=fake.sleep,
        owner_id=owner,
    )
    return loop.run(), exchange


def final_sha256(exchange: Exchange) -> str:
    manifest = exchange.read_global_manifest(ROUNDS + 1)
    assert manifest is not None and manifest.final
    return manifest.sha256


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    config = make_config()
    state, exchange = run(tmp_path_factory.mktemp("ref"), config, None, "agg-1", FakeTime())
    assert state.phase == "done"
    return final_sha256(exchange), state.strategy_state


@pytest.mark.parametrize(
    "point", ["after_result", "after_ledger", "after_next_global", "after_state"]
)
def test_fedadam_killed_while_closing_a_round_resumes_to_the_same_model(
    tmp_path: Path, reference: tuple[str, dict], point: str
) -> None:
    config = make_config()
    fake = FakeTime()
    with pytest.raises(Crash):
        run(tmp_path, config, point, "agg-1", fake)
    fake.now += config.round.lease_s + 1  # the dead aggregator's lease lapses
    state, exchange = run(tmp_path, config, None, "agg-2", fake)
    assert state.phase == "done"
    expected_sha, expected_state = reference
    assert final_sha256(exchange) == expected_sha
    assert state.strategy_state == expected_state  # the moments, bit for bit
    assert [exchange.read_result(r) is not None for r in range(1, ROUNDS + 2)] == [True] * (
        ROUNDS + 1
    )


def test_fedadam_moves_the_model_differently_from_fedavg(tmp_path: Path, reference) -> None:
    """Guards the test above against a strategy that is not stateful at all."""
    tree = make_config().model_dump(mode="json")
    tree["strategy"] = {"name": "fedavg"}
    config = FederationConfig.model_validate(tree)
    _, exchange = run(tmp_path, config, None, "agg-1", FakeTime())
    assert final_sha256(exchange) != reference[0]


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "fedavgm", "momentum": 0.9},
        {"name": "fedyogi", "server_learning_rate": 0.05},
        {"name": "median", "chunk_elements": 5},
    ],
)
def test_other_strategies_resume_after_the_next_model_was_published(
    tmp_path: Path, strategy: dict[str, object]
) -> None:
    """The window that needs ``finish()`` re-run, for momentum, Yogi and a spooled rule."""
    config = make_config(strategy)
    state, exchange = run(tmp_path / "ref", config, None, "agg-1", FakeTime())
    expected = final_sha256(exchange), state.strategy_state
    fake = FakeTime()
    with pytest.raises(Crash):
        run(tmp_path / "run", config, "after_next_global", "agg-1", fake)
    fake.now += config.round.lease_s + 1
    state, exchange = run(tmp_path / "run", config, None, "agg-2", fake)
    assert (final_sha256(exchange), state.strategy_state) == expected
