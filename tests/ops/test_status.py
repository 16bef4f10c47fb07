"""``fedsilo status`` and ``ledger verify`` over both stores: a folder, and S3 (moto)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from fedsilo.status import collect_status, status_table
from fl_core.exchange.manifests import Registration
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_core.ledger import verify_ledger
from fl_core.serialization import sha256_hex

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
    text = _render(exchange)
    assert "round 3 (evaluate)" in text and "revoked" in text and "site-004" in text


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
