"""A hospital whose secure aggregation advert is refused is a named rejection of the round.

The aggregator is a real ``RoundLoop`` and the other hospitals real client threads
(``bench/_secagg_harness.py``); the hostile hospital's advert is in the exchange before the
round opens, so its own client finds the key taken and cannot replace it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench._secagg_harness import Logistic, run_round, secagg_round_config
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import FederationState
from fl_core.exchange.protocol import Exchange
from fl_core.secagg import transport
from fl_core.secagg.messages import SecAggSetup
from fl_core.serialisation import decode_weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_loop import RoundLoop

SITES = [f"site-{c}" for c in "abcdef"]
FEATURES = 4
HOSTILE = "site-f"


@pytest.mark.parametrize(
    ("advert", "reason"),
    [
        (b'{"site_id": "site-f", "round_index": ', "malformed_secagg"),
        (b"{" + b" " * 40_000 + b"}", "too_large"),
    ],
)
def test_a_refused_advert_is_a_rejection_with_its_reason(
    tmp_path: Path, advert: bytes, reason: str
) -> None:
    planted = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "sa")
    planted.store.put_new(planted.layout.secagg_update_key(1, HOSTILE, "advert"), advert)
    exchange, _, _ = run_round(
        tmp_path, SITES, secagg_round_config(SITES), lambda: Logistic(FEATURES)
    )
    setup = transport.read(exchange, exchange.layout.secagg_global_key(1, "setup"), SecAggSetup)
    assert setup is not None and HOSTILE not in setup.participants
    result = exchange.read_result(1)
    assert result is not None
    assert [(d.site_id, d.reason) for d in result.rejected] == [(HOSTILE, reason)]
    assert sorted(d.site_id for d in result.accepted) == [s for s in SITES if s != HOSTILE]
    assert result.foreign_keys == 0 and result.missing == []
    ledger = exchange.read_ledger_entry(1)
    assert ledger is not None and (HOSTILE, reason) in [tuple(r) for r in ledger.rejected]


class AggregatorCrash(BaseException):
    """The aggregator process dies."""


def test_an_aggregator_restarted_after_the_setup_finds_the_refusal_again(tmp_path: Path) -> None:
    planted = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "sa")
    planted.store.put_new(planted.layout.secagg_update_key(1, HOSTILE, "advert"), b"[]")
    setup_key = planted.layout.secagg_global_key(1, "setup")
    config = secagg_round_config(SITES, **{"round.lease_s": 1.0})

    def crash_once_set_up(seconds: float) -> None:
        if planted.store.exists(setup_key):
            raise AggregatorCrash
        time.sleep(seconds)

    with pytest.raises(AggregatorCrash):
        run_round(tmp_path, SITES, config, lambda: Logistic(FEATURES), sleep=crash_once_set_up)
    found = planted.read_state()
    assert found is not None and HOSTILE in found[0].decisions
    # as a crash between publishing the setup and saving the rejection leaves the state
    state, etag = found
    decisions = {s: d for s, d in state.decisions.items() if s != HOSTILE}
    planted.write_state(
        FederationState.model_validate({**state.model_dump(), "decisions": decisions}), etag
    )
    first = planted.read_global_manifest(1)
    assert first is not None
    initial = decode_weights(planted.read_global_weights(first))
    RoundLoop(planted, FedAvgAggregator(), config, SITES, initial_weights=initial).run()
    result = planted.read_result(1)
    assert result is not None
    assert [(d.site_id, d.reason) for d in result.rejected] == [(HOSTILE, "malformed_secagg")]
    assert sorted(d.site_id for d in result.accepted) == [s for s in SITES if s != HOSTILE]
