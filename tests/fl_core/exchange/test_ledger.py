"""The audit ledger: a clean run verifies; every kind of tampering names the right round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fl_core.exchange.layout import ExchangeLayout
from fl_core.exchange.ledger import chain_hash, verify_ledger
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store

FEDERATION = "demo"
LAYOUT = ExchangeLayout(FEDERATION)


def local_exchange(root: Path) -> Exchange:
    return Exchange(open_store(root.as_uri()), FEDERATION)


def _writable(path: Path) -> Path:
    """History files are read-only in a local exchange; whoever owns the folder can undo it."""
    path.chmod(0o600)
    return path


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    _writable(path).write_bytes(bytes(data))


def _first_bad_round(root: Path) -> int | None:
    return verify_ledger(local_exchange(root)).first_bad_round


def test_clean_run_verifies(exchange_dir: Path) -> None:
    report = verify_ledger(local_exchange(exchange_dir))
    assert report.ok, report.problems
    assert report.rounds_checked == 3  # two training rounds and the final evaluation
    assert report.head_hash is not None and "verified" in report.summary()


def test_altered_global_model_names_its_round(exchange_dir: Path) -> None:
    _flip_byte(exchange_dir / LAYOUT.global_weights_key(2))
    report = verify_ledger(local_exchange(exchange_dir))
    assert report.first_bad_round == 2
    assert "global model file was altered" in report.problems[0].message


def test_altered_update_names_its_round_and_site(exchange_dir: Path) -> None:
    _flip_byte(exchange_dir / LAYOUT.update_weights_key(1, "site-003"))
    report = verify_ledger(local_exchange(exchange_dir))
    assert report.first_bad_round == 1
    assert "site-003" in report.problems[0].message


def test_altered_ledger_entry_is_caught(exchange_dir: Path) -> None:
    path = exchange_dir / LAYOUT.ledger_key(2)
    entry = json.loads(path.read_text())
    entry["rejected"] = [["site-001", "nan_or_inf"]]
    _writable(path).write_text(json.dumps(entry))
    assert _first_bad_round(exchange_dir) == 2


def test_rehashed_ledger_entry_is_still_caught(exchange_dir: Path) -> None:
    """A forger who recomputes the entry's own hash breaks the link and the stored files."""
    path = exchange_dir / LAYOUT.ledger_key(2)
    entry = json.loads(path.read_text())
    entry["accepted"] = entry["accepted"][1:]  # pretend a hospital's update was never admitted
    entry["entry_hash"] = chain_hash({k: v for k, v in entry.items() if k != "entry_hash"})
    _writable(path).write_text(json.dumps(entry))
    report = verify_ledger(local_exchange(exchange_dir))
    assert report.first_bad_round == 2
    assert any("result.json disagrees" in p.message for p in report.problems)
    assert any(p.round_index == 3 and "prev_hash" in p.message for p in report.problems)


def test_deleted_ledger_entry_is_caught(exchange_dir: Path) -> None:
    (exchange_dir / LAYOUT.ledger_key(2)).unlink()
    report = verify_ledger(local_exchange(exchange_dir))
    assert report.first_bad_round == 2
    assert "missing" in report.problems[0].message


def test_deleted_last_ledger_entry_is_caught(exchange_dir: Path) -> None:
    (exchange_dir / LAYOUT.ledger_key(3)).unlink()
    assert _first_bad_round(exchange_dir) == 3


def test_swapped_ledger_entries_are_caught(exchange_dir: Path) -> None:
    first, second = exchange_dir / LAYOUT.ledger_key(1), exchange_dir / LAYOUT.ledger_key(2)
    one, two = first.read_bytes(), second.read_bytes()
    _writable(first).write_bytes(two)
    _writable(second).write_bytes(one)
    report = verify_ledger(local_exchange(exchange_dir))
    assert report.first_bad_round == 1
    assert "reordered" in report.problems[0].message


def _fedsilo(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "fedsilo"
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_cli_exit_codes_and_one_line(exchange_dir: Path) -> None:
    args = ("ledger", "verify", "--federation", FEDERATION, "--exchange", exchange_dir.as_uri())
    ok = _fedsilo(*args)
    assert ok.returncode == 0, ok.stderr
    assert "verified: 3 rounds" in ok.stdout
    _flip_byte(exchange_dir / LAYOUT.update_weights_key(2, "site-001"))
    bad = _fedsilo(*args)
    assert bad.returncode == 8
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "FAILED at round 2" in lines[0], bad.stderr


def test_a_wrong_federation_is_not_a_verified_empty_ledger(exchange_dir: Path) -> None:
    args = ("ledger", "verify", "--federation", "other", "--exchange", exchange_dir.as_uri())
    done = _fedsilo(*args)
    assert done.returncode == 8
    assert "nothing to verify: federation other" in done.stderr
    assert "verified" not in done.stdout
