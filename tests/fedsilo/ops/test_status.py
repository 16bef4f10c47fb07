"""``fedsilo status`` and ``ledger verify`` over both stores: a folder, and S3 (moto)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from fedsilo.engine.run_folder import record_outcome
from fedsilo.ops.status import collect_status, status_table
from fl_core.exchange.ledger import verify_ledger
from fl_core.exchange.manifests import Registration
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_core.hashing import sha256_hex

FEDERATION = "demo"
BUCKET = "fedsilo-exchange-test"


def _render(exchange: Exchange) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(status_table(collect_status(exchange)))
    return console.export_text()


def test_status_from_folder(exchange_dir: Path) -> None:
    exchange = Exchange(open_store(exchange_dir.as_uri()), FEDERATION)
    exchange.write_registration(
        Registration(site_id="site-002", joined_unix=1.0, status="revoked"), None
    )
    status = collect_status(exchange)
    assert status.round_index == 3 and status.phase == "done" and status.task == "evaluate"
    assert [s.site_id for s in status.sites] == [f"site-00{i}" for i in range(1, 5)]
    assert all(s.answered and s.decision == "accepted" for s in status.sites)
    assert {s.site_id: s.registration for s in status.sites}["site-002"] == "revoked"
    assert any(s.last_auroc is not None for s in status.sites)
    assert status.training_round == 2 and status.final
    states = {s.site_id: s.state for s in status.sites}
    assert states == {"site-001": "finished", "site-002": "revoked"} | {
        f"site-00{i}": "finished" for i in (3, 4)
    }
    text = _render(exchange)
    assert "round 2 (last), final evaluation" in text and "revoked" in text
    assert "site-004" in text and "(final)" in text


def test_status_names_a_malformed_registration_and_preflight_report(exchange_dir: Path) -> None:
    exchange = Exchange(open_store(exchange_dir.as_uri()), FEDERATION)
    exchange.write_registration(
        Registration(site_id="site-009", joined_unix=1.0, status="pending"), None
    )
    broken_registration = exchange.layout.registry_key("site-008")
    exchange.store.put_new(broken_registration, b'{"site_id": "site-008", "status": ')
    hostile = exchange.layout.registry_prefix() + "[red]x\x1b[2J.json"
    exchange.store.put_new(hostile, b"{}")
    report = exchange.layout.preflight_key("site-009", "1")
    exchange.store.put_new(report, b"not a report")
    status = collect_status(exchange)
    skipped = {(row.site_id, row.key, row.reason) for row in status.skipped}
    assert skipped == {
        ("site-008", broken_registration, "malformed_registration"),
        ("[red]x?[2J", hostile.replace("\x1b", "?"), "malformed_registration"),
        ("site-009", report, "malformed_preflight"),
    }
    text = " ".join(_render(exchange).split())  # the caption wraps
    assert f"skipped {report} (site site-009): malformed_preflight" in text
    assert f"skipped {broken_registration} (site site-008): malformed_registration" in text
    assert "[red]x?[2J.json" in text and "\x1b" not in text
    assert {s.site_id: s.registration for s in status.sites}["site-008"] == "revoked"


def test_status_and_report_take_the_out_folder(finished_run: Path, tmp_path: Path) -> None:
    """`simulate --out D` writes D/<run-id>/; status and report take D and say which run."""
    script = Path(sys.executable).parent / "fedsilo"
    out = tmp_path / "runs"
    shutil.copytree(finished_run, out / "r1")
    time.sleep(0.01)
    (out / "stopped-early").mkdir()  # newer, failed: it never wrote metrics.jsonl
    (out / "stopped-early" / "config.json").write_text((finished_run / "config.json").read_text())
    record_outcome(out / "stopped-early", "failed", "hospital worker 0 failed")
    status = subprocess.run(
        [str(script), "status", str(out)], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert f"run folder: {out / 'r1'} (the newest run of 2" in status.stderr
    assert "phase" in status.stdout
    report = subprocess.run(
        [str(script), "report", str(out), "-o", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert f"run folder: {out / 'r1'} (the newest finished run of 2" in report.stdout
    assert (tmp_path / "r.html").is_file()


def test_status_without_a_run_or_an_exchange_names_the_flags() -> None:
    script = Path(sys.executable).parent / "fedsilo"
    done = subprocess.run(
        [str(script), "status"], capture_output=True, text=True, timeout=60, env=_no_fedsilo_env()
    )
    assert done.returncode == 2
    assert "--federation and --exchange" in done.stderr


def _no_fedsilo_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FEDSILO_")}


def test_status_cli_from_folder(exchange_dir: Path) -> None:
    script = Path(sys.executable).parent / "fedsilo"
    done = subprocess.run(
        [str(script), "status", "--federation", FEDERATION, "--exchange", str(exchange_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "phase done" in done.stdout and "site-003" in done.stdout


@pytest.fixture
def s3_exchange(exchange_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Exchange]:
    """The finished run's exchange copied object by object into a mocked bucket."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        store = open_store(f"s3://{BUCKET}/trial")
        for path in exchange_dir.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(exchange_dir).as_posix()
                if key.endswith("state.json"):
                    store.replace(key, path.read_bytes(), None)
                else:
                    store.put_new(key, path.read_bytes())
        yield Exchange(store, FEDERATION)


def test_status_and_verify_over_s3(s3_exchange: Exchange) -> None:
    status = collect_status(s3_exchange)
    assert status.round_index == 3 and len(status.sites) == 4
    assert "site-001" in _render(s3_exchange)
    assert verify_ledger(s3_exchange).ok


@pytest.mark.parametrize("with_digest", [False, True])
def test_verify_over_s3_catches_a_replaced_update(s3_exchange: Exchange, with_digest: bool) -> None:
    """Overwritten with raw boto3: without fedsilo's sha256 metadata, or with a matching one."""
    key = s3_exchange.layout.update_weights_key(2, "site-004")
    data = bytearray(s3_exchange.store.get(key))
    data[-1] ^= 0x01
    metadata = {"sha256": sha256_hex(bytes(data))} if with_digest else {}
    boto3.client("s3", region_name="eu-west-1").put_object(
        Bucket=BUCKET, Key=f"trial/{key}", Body=bytes(data), Metadata=metadata
    )
    report = verify_ledger(s3_exchange)
    assert report.first_bad_round == 2 and "site-004" in report.problems[0].message
