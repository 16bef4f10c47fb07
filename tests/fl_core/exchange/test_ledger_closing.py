"""A round whose close an aggregator crash cut short verifies; a removed entry still fails.

The aggregator closes round r with result.json, the ledger entry, round r+1's global model
and then state.json. Killed in between (``make chaos`` kills it at each of these writes),
the exchange holds a result without its entry or next model; ``ledger verify`` must not call
that tampering, and the resumed aggregator writes what is missing.
"""

from __future__ import annotations

from pathlib import Path

from fl_core.exchange.layout import ExchangeLayout
from fl_core.exchange.ledger import verify_ledger
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store

LAYOUT = ExchangeLayout("demo")


def _cut_close_of_round_2(root: Path, *, entry_written: bool) -> Exchange:
    """The exchange as a crash while closing round 2 leaves it (round 3 never opened)."""
    exchange = Exchange(open_store(root.as_uri()), "demo")
    found = exchange.read_state()
    assert found is not None
    state, etag = found
    exchange.write_state(state.model_copy(update={"round_index": 2, "phase": "collecting"}), etag)
    doomed = [LAYOUT.ledger_key(3), LAYOUT.result_key(3)]
    doomed += [LAYOUT.global_manifest_key(3), LAYOUT.global_weights_key(3)]
    doomed += [LAYOUT.published_manifest_key(), LAYOUT.published_weights_key()]
    if not entry_written:
        doomed.append(LAYOUT.ledger_key(2))
    for key in doomed:
        (root / key).unlink()
    return exchange


def test_crash_between_result_and_ledger_entry_verifies(exchange_dir: Path) -> None:
    report = verify_ledger(_cut_close_of_round_2(exchange_dir, entry_written=False))
    assert report.ok, report.problems
    assert report.closing_round == 2
    assert "round 2 is closing" in report.summary()


def test_crash_before_the_next_global_model_verifies(exchange_dir: Path) -> None:
    report = verify_ledger(_cut_close_of_round_2(exchange_dir, entry_written=True))
    assert report.ok, report.problems
    assert report.closing_round == 2


def test_removed_earlier_entry_still_fails_while_closing(exchange_dir: Path) -> None:
    exchange = _cut_close_of_round_2(exchange_dir, entry_written=False)
    (exchange_dir / LAYOUT.ledger_key(1)).unlink()
    report = verify_ledger(exchange)
    assert report.first_bad_round == 1
    assert "missing" in report.problems[0].message


def test_removed_entry_of_a_finished_round_still_fails(exchange_dir: Path) -> None:
    """Once state.json has moved on, a missing entry was removed, not pending."""
    (exchange_dir / LAYOUT.ledger_key(3)).unlink()
    report = verify_ledger(Exchange(open_store(exchange_dir.as_uri()), "demo"))
    assert report.first_bad_round == 3
    assert report.closing_round is None
