"""A hospital whose secure aggregation advert is refused is a named rejection of the round.

The aggregator is a real ``RoundLoop`` and the other hospitals real client threads
(``bench/_secagg_harness.py``); the hostile hospital's advert is in the exchange before the
round opens, so its own client finds the key taken and cannot replace it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._secagg_harness import Logistic, run_round
from fl_core.config import FederationConfig, load_config
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.protocol import Exchange
from fl_core.secagg import transport
from fl_core.secagg.messages import SecAggSetup

SITES = [f"site-{c}" for c in "abcdef"]
FEATURES = 4
HOSTILE = "site-f"


def make_config() -> FederationConfig:
    return load_config(
        overrides={
            "federation_id": "sa",
            "rounds": 1,
            "evaluation.histogram_bins": 10,
            "round.min_sites": 2,
            "round.deadline_s": 3.0,
            "round.poll_interval_s": 0.02,
            "round.below_quorum": "fail",
            "data.synthetic.hospitals": len(SITES),
            "privacy.secagg.enabled": True,
            "privacy.secagg.advert_timeout_s": 20.0,
            "privacy.secagg.unmask_timeout_s": 2.0,
        }
    )


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
    exchange, _, _ = run_round(tmp_path, SITES, make_config(), lambda: Logistic(FEATURES))
    setup = transport.read(exchange, exchange.layout.secagg_global_key(1, "setup"), SecAggSetup)
    assert setup is not None and HOSTILE not in setup.participants
    result = exchange.read_result(1)
    assert result is not None
    assert [(d.site_id, d.reason) for d in result.rejected] == [(HOSTILE, reason)]
    assert sorted(d.site_id for d in result.accepted) == [s for s in SITES if s != HOSTILE]
    assert result.foreign_keys == 0 and result.missing == []
    ledger = exchange.read_ledger_entry(1)
    assert ledger is not None and (HOSTILE, reason) in [tuple(r) for r in ledger.rejected]
