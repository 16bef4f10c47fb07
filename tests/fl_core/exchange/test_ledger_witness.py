"""A hospital's check of the ledger against its receipts: an honest run passes; a centre that
rewrites history and recomputes the chain passes its own verify and is caught by a hospital
holding an earlier ledger head."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from fedsilo.testing.cli import run_fedsilo
from fedsilo.testing.witnessed_run import run_witnessed, small_config
from fl_core.errors import ConfigError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.layout import ExchangeLayout
from fl_core.exchange.ledger import chain_hash, expected_entry_fields, verify_ledger
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.receipts import (
    Receipt,
    append_receipt,
    last_receipt,
    read_receipts,
    receipts_path,
)
from fl_core.exchange.witness import verify_as_site
from fl_core.hashing import sha256_hex

FEDERATION = "demo"
LAYOUT = ExchangeLayout(FEDERATION)
ROUNDS = 3  # two training rounds and the final evaluation


@pytest.fixture(scope="module")
def witnessed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An honest run over a local folder: ``exchange/`` and the hospitals' ``state/``."""
    root = tmp_path_factory.mktemp("witnessed")
    config = small_config(rounds=ROUNDS - 1, hospitals=3)
    exchange = Exchange(LocalDirectoryStore(root / "exchange", durable=False), FEDERATION)
    run_witnessed(config, exchange, root / "state")
    return root


@pytest.fixture
def run_copy(witnessed_run: Path, tmp_path: Path) -> Path:
    """A private copy to tamper with."""
    shutil.copytree(witnessed_run, tmp_path / "run")
    return tmp_path / "run"


def _exchange(run: Path) -> Exchange:
    return Exchange(LocalDirectoryStore(run / "exchange"), FEDERATION)


def _overwrite(path: Path, document: dict[str, object]) -> None:
    """What the owner of a folder can do to a read-only file: make it writable, then write."""
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_text(json.dumps(document, indent=1))


def _rewrite_history(run: Path, round_index: int, site_id: str) -> None:
    """The centre's forgery: ``site_id``'s accepted update of ``round_index`` becomes a
    rejection, and everything the centre's own verify reads is made to agree: that round's
    result.json, every ledger entry from it on (the chain recomputed) and the ledger head of
    every later global manifest."""
    exchange = _exchange(run)
    result_path = run / "exchange" / LAYOUT.result_key(round_index)
    result = json.loads(result_path.read_text())
    forged = next(d for d in result["accepted"] if d["site_id"] == site_id)
    result["accepted"].remove(forged)
    result["rejected"].append(
        {**forged, "status": "rejected", "reason": "nan_or_inf", "sha256": None}
    )
    _overwrite(result_path, result)
    previous = exchange.read_ledger_entry(round_index - 1) if round_index > 1 else None
    prev_hash = previous.entry_hash if previous else None
    for index in range(round_index, ROUNDS + 1):
        stored = exchange.read_result(index)
        assert stored is not None
        fields = {**expected_entry_fields(stored), "prev_hash": prev_hash}
        prev_hash = chain_hash(fields)
        _overwrite(run / "exchange" / LAYOUT.ledger_key(index), {**fields, "entry_hash": prev_hash})
        manifest_path = run / "exchange" / LAYOUT.global_manifest_key(index + 1)
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            _overwrite(manifest_path, {**manifest, "ledger_head": prev_hash})


def _site_report(run: Path, site_id: str) -> list[str]:
    receipts = read_receipts(receipts_path(run / "state", site_id))
    return verify_as_site(_exchange(run), site_id, receipts).lines()


def _verify_args(run: Path, site_id: str, federation: str = FEDERATION) -> tuple[str, ...]:
    return (
        "ledger", "verify", "--federation", federation,
        "--exchange", (run / "exchange").as_uri(),
        "--site-id", site_id, "--state-dir", str(run / "state"),
    )  # fmt: skip


def test_every_global_manifest_names_the_ledger_head(witnessed_run: Path) -> None:
    exchange = _exchange(witnessed_run)
    first = exchange.read_global_manifest(1)
    assert first is not None and first.ledger_head is None
    for round_index in range(2, ROUNDS + 1):
        manifest = exchange.read_global_manifest(round_index)
        entry = exchange.read_ledger_entry(round_index - 1)
        assert manifest is not None and entry is not None
        assert manifest.ledger_head == entry.entry_hash


def test_receipts_hold_the_hospitals_own_digest_of_each_update(witnessed_run: Path) -> None:
    receipts = read_receipts(receipts_path(witnessed_run / "state", "site-002"))
    assert [r.round_index for r in receipts] == list(range(1, ROUNDS + 1))
    for receipt in receipts[: ROUNDS - 1]:  # training rounds: the file it wrote
        written = (
            witnessed_run / "exchange" / LAYOUT.update_weights_key(receipt.round_index, "site-002")
        )
        assert receipt.update_sha256 == sha256_hex(written.read_bytes())
    assert receipts[-1].task == "evaluate" and receipts[-1].update_sha256 is None
    # each later round read the entry its head named and saw the update before it accepted
    assert [r.previous_update_accepted for r in receipts] == [None, True, True]


def test_history_files_of_a_local_exchange_are_read_only(witnessed_run: Path) -> None:
    exchange = witnessed_run / "exchange"
    for key in (LAYOUT.ledger_key(1), LAYOUT.result_key(1), LAYOUT.global_weights_key(2)):
        assert not (exchange / key).stat().st_mode & 0o222, key
    assert (exchange / LAYOUT.update_weights_key(1, "site-001")).stat().st_mode & stat.S_IWUSR


def test_honest_run_passes_the_hospitals_verify(witnessed_run: Path) -> None:
    done = run_fedsilo(*_verify_args(witnessed_run, "site-001"), cwd=witnessed_run)
    assert done.returncode == 0, done.stderr
    assert f"verified for site-001: {ROUNDS} entries read, {ROUNDS} receipts match" in done.stdout


def test_rewritten_history_passes_the_centre_but_not_a_hospital(run_copy: Path) -> None:
    _rewrite_history(run_copy, round_index=1, site_id="site-002")
    centre = verify_ledger(_exchange(run_copy))
    assert centre.ok, centre.problems  # the centre's own check sees a consistent history
    assert "object versions not counted" in centre.summary()  # a folder keeps no versions
    # any hospital holding the heads of rounds 2 and 3 catches it, not only the one wronged
    done = run_fedsilo(*_verify_args(run_copy, "site-001"), cwd=run_copy)
    assert done.returncode == 8
    lines = done.stderr.strip().splitlines()
    assert all("FAILED for site-001 at round" in line for line in lines), lines
    assert any("round 2" in line and "history at or before round 1" in line for line in lines)
    assert any("global manifest was rewritten" in line for line in lines)
    wronged = _site_report(run_copy, "site-002")
    assert any(
        "at round 1: the update site-002 sent" in line and "no longer lists it" in line
        for line in wronged
    ), wronged


def test_a_replaced_update_digest_is_named(run_copy: Path) -> None:
    """The last training round's entry made to record another file for site-003."""
    exchange = _exchange(run_copy)
    last_train = ROUNDS - 1
    entry = exchange.read_ledger_entry(last_train)
    assert entry is not None
    accepted = [[s, "0" * 64 if s == "site-003" else d] for s, d in entry.accepted]
    fields = {**entry.model_dump(mode="json", exclude={"entry_hash"}), "accepted": accepted}
    _overwrite(
        run_copy / "exchange" / LAYOUT.ledger_key(last_train),
        {**fields, "entry_hash": chain_hash(fields)},
    )
    lines = _site_report(run_copy, "site-003")
    assert any(
        f"at round {last_train}: the ledger records update 000000000000" in line for line in lines
    )


def test_a_removed_latest_entry_is_named(run_copy: Path) -> None:
    (run_copy / "exchange" / LAYOUT.ledger_key(ROUNDS - 1)).unlink()
    lines = _site_report(run_copy, "site-001")
    assert any(f"round {ROUNDS - 1}" in line and "removed" in line for line in lines), lines


def test_wrong_federation_missing_receipts_and_nothing_to_read_fail(run_copy: Path) -> None:
    wrong = run_fedsilo(*_verify_args(run_copy, "site-001", federation="other"), cwd=run_copy)
    assert (
        wrong.returncode == 2 and "no receipts of site site-001 in federation other" in wrong.stderr
    )
    unknown = run_fedsilo(*_verify_args(run_copy, "site-009"), cwd=run_copy)
    assert unknown.returncode == 2 and "no receipts file" in unknown.stderr
    shutil.rmtree(run_copy / "exchange" / LAYOUT.ledger_prefix())
    empty = run_fedsilo(*_verify_args(run_copy, "site-001"), cwd=run_copy)
    assert empty.returncode == 8 and "no ledger entry of federation demo" in empty.stderr
    assert "verified" not in empty.stdout


def test_a_receipt_cut_off_mid_write_is_skipped_and_the_next_one_kept(run_copy: Path) -> None:
    path = receipts_path(run_copy / "state", "site-001")
    with path.open("a") as handle:
        handle.write('{"federation_id": "demo", "site_')
    assert len(read_receipts(path)) == ROUNDS
    last = last_receipt(path)
    assert last is not None and last.round_index == ROUNDS
    later = Receipt.model_validate({**last.model_dump(), "round_index": ROUNDS + 1})
    append_receipt(path, later)  # the restarted hospital's next answer
    assert [r.round_index for r in read_receipts(path)] == list(range(1, ROUNDS + 2))
    assert last_receipt(path) == later


def test_an_altered_receipt_is_refused(run_copy: Path) -> None:
    path = receipts_path(run_copy / "state", "site-001")
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"round_index":1', '"round_index":0')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="line 1 is malformed"):
        read_receipts(path)
