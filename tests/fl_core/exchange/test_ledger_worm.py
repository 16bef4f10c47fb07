"""The federation's history on S3 (moto) is written once, under Object Lock in COMPLIANCE mode:
no version can be deleted, and an overwrite leaves a second version that ``verify_ledger``
names as rewritten history."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from fedsilo.testing.moto_s3 import FAKE_KEY, REAL_AWS_VARIABLES, REGION, offline_settings
from fedsilo.testing.witnessed_run import run_witnessed, small_config
from fl_core.exchange.layout import ExchangeLayout
from fl_core.exchange.ledger import verify_ledger
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.receipts import read_receipts, receipts_path
from fl_core.exchange.s3_store import SHA256_METADATA_KEY, S3Store
from fl_core.exchange.witness import verify_as_site
from fl_core.hashing import sha256_hex

FEDERATION = "demo"
LAYOUT = ExchangeLayout(FEDERATION)
PREFIX = "exchange"
RETENTION_DAYS = 30


@dataclass
class LockedRun:
    """A finished run in a bucket created with Object Lock, and every PutObject it sent."""

    store: S3Store
    exchange: Exchange
    state_dir: Path
    puts: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def client(self) -> Any:
        return self.store.client

    def s3_key(self, key: str) -> str:
        return f"{PREFIX}/{key}"


@pytest.fixture(scope="module")
def locked_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedRun]:
    folder = tmp_path_factory.mktemp("worm")
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name in REAL_AWS_VARIABLES:
            env.delenv(name, raising=False)
        for name, value in offline_settings(folder).items():
            env.setenv(name, value)
        env.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", FAKE_KEY)
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(
            Bucket="fedsilo-worm",
            CreateBucketConfiguration={"LocationConstraint": REGION},
            ObjectLockEnabledForBucket=True,
        )
        store = S3Store("fedsilo-worm", PREFIX, client=client)
        exchange = Exchange(store, FEDERATION, history_retention_days=RETENTION_DAYS)
        run = LockedRun(store, exchange, folder / "state")

        def record(request: Any, **_: Any) -> None:
            run.puts[request.url.split("?")[0].rsplit(f"{PREFIX}/", 1)[-1]] = dict(
                request.headers.items()
            )

        client.meta.events.register("before-send.s3.PutObject", record)
        run_witnessed(small_config(), run.exchange, run.state_dir)
        yield run


def _header(headers: dict[str, str], name: str) -> str | None:
    found = {k.lower(): v for k, v in headers.items()}.get(name)
    return found.decode() if isinstance(found, bytes) else found


def test_history_is_put_under_compliance_retention_with_a_checksum(locked_run: LockedRun) -> None:
    history = [LAYOUT.ledger_key(1), LAYOUT.result_key(1), LAYOUT.global_manifest_key(2)]
    for key in history:
        headers = locked_run.puts[key]
        assert _header(headers, "x-amz-object-lock-mode") == "COMPLIANCE", key
        # S3 refuses a retained PutObject without Content-MD5 or a checksum algorithm header
        # (MissingUploadObjectWithObjectLockHeaders; moto too): the SHA-256 sent with every write
        assert _header(headers, "x-amz-sdk-checksum-algorithm") == "SHA256", key
        assert _header(headers, "x-amz-checksum-sha256"), key
    soon = datetime.now(UTC) + timedelta(days=RETENTION_DAYS - 1)
    for key in [*history, LAYOUT.global_weights_key(2)]:
        head = locked_run.client.head_object(Bucket="fedsilo-worm", Key=locked_run.s3_key(key))
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        assert head["ObjectLockRetainUntilDate"] > soon, key
    update = LAYOUT.update_weights_key(1, "site-001")
    assert _header(locked_run.puts[update], "x-amz-object-lock-mode") is None


def test_a_retained_version_cannot_be_deleted(locked_run: LockedRun) -> None:
    key = locked_run.s3_key(LAYOUT.ledger_key(1))
    version = locked_run.client.head_object(Bucket="fedsilo-worm", Key=key)["VersionId"]
    with pytest.raises(ClientError, match="AccessDenied"):
        locked_run.client.delete_object(Bucket="fedsilo-worm", Key=key, VersionId=version)
    with pytest.raises(ClientError, match="AccessDenied"):
        locked_run.client.delete_object(
            Bucket="fedsilo-worm", Key=key, VersionId=version, BypassGovernanceRetention=True
        )
    assert locked_run.exchange.read_ledger_entry(1) is not None


def test_an_overwrite_leaves_a_version_that_verify_names(locked_run: LockedRun) -> None:
    honest = verify_ledger(locked_run.exchange)
    assert honest.ok and honest.versions_checked
    key = LAYOUT.result_key(2)
    same = locked_run.store.get(key)  # the centre "rewrites" it, even with the same bytes
    locked_run.client.put_object(
        Bucket="fedsilo-worm",
        Key=locked_run.s3_key(key),
        Body=same,
        Metadata={SHA256_METADATA_KEY: sha256_hex(same)},
    )
    report = verify_ledger(locked_run.exchange)
    assert report.first_bad_round == 2
    assert [p.message for p in report.problems] == [
        f"rounds/{2:06d}/result.json has 2 versions: it was overwritten or deleted after it "
        "was written (rewritten history)"
    ]


def test_a_bucket_without_object_lock_is_written_unretained(locked_run: LockedRun) -> None:
    client = locked_run.client
    client.create_bucket(
        Bucket="fedsilo-plain", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    store = S3Store("fedsilo-plain", PREFIX, client=client)
    until = datetime.now(UTC) + timedelta(days=1)
    store.put_new("a.json", b"{}", until)
    store.put_new("b.json", b"{}", until)
    assert store.get("a.json") == store.get("b.json") == b"{}"
    head = client.head_object(Bucket="fedsilo-plain", Key=f"{PREFIX}/b.json")
    assert "ObjectLockMode" not in head


def test_a_hospitals_verify_reads_by_exact_key_and_lists_nothing(locked_run: LockedRun) -> None:
    """A hospital's role may not list: its check must pass on GETs of known keys alone."""
    operations: list[str] = []

    def record(model: Any, **_: Any) -> None:
        operations.append(model.name)

    locked_run.client.meta.events.register("before-call.s3", record)
    try:
        receipts = read_receipts(receipts_path(locked_run.state_dir, "site-003"))
        report = verify_as_site(locked_run.exchange, "site-003", receipts)
    finally:
        locked_run.client.meta.events.unregister("before-call.s3", record)
    assert report.ok, report.lines()
    assert report.receipts_checked == 3
    assert operations and set(operations) <= {"GetObject"}, sorted(set(operations))
