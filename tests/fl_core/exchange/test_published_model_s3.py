"""The published model on S3 (moto): retained like the history it derives from, and an
overwrite of it is rewritten history that ``ledger verify`` names at the final round."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fl_core.exchange.ledger import verify_ledger
from fl_core.exchange.s3_store import SHA256_METADATA_KEY
from fl_core.hashing import sha256_hex
from tests.fl_core.exchange.test_ledger_worm import (
    LAYOUT,
    RETENTION_DAYS,
    LockedRun,
    locked_run,  # noqa: F401  (the fixture: a finished run in a bucket with Object Lock)
)

BUCKET = "fedsilo-worm"
PUBLISHED = [LAYOUT.published_weights_key(), LAYOUT.published_manifest_key()]


def test_the_published_model_is_written_under_compliance_retention(
    locked_run: LockedRun,  # noqa: F811
) -> None:
    soon = datetime.now(UTC) + timedelta(days=RETENTION_DAYS - 1)
    for key in PUBLISHED:
        head = locked_run.client.head_object(Bucket=BUCKET, Key=locked_run.s3_key(key))
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        assert head["ObjectLockRetainUntilDate"] > soon, key
    published = locked_run.exchange.read_published_manifest()
    assert published is not None
    assert sha256_hex(locked_run.exchange.read_published_weights(published)) == published.sha256


def test_an_overwritten_published_model_is_named_at_the_final_round(
    locked_run: LockedRun,  # noqa: F811
) -> None:
    honest = verify_ledger(locked_run.exchange)
    assert honest.ok and honest.versions_checked and honest.published_sha256 is not None
    published = locked_run.exchange.read_published_manifest()
    assert published is not None
    key = LAYOUT.published_weights_key()
    same = locked_run.store.get(key)  # the centre "rewrites" it, even with the same bytes
    locked_run.client.put_object(
        Bucket=BUCKET,
        Key=locked_run.s3_key(key),
        Body=same,
        Metadata={SHA256_METADATA_KEY: sha256_hex(same)},
    )
    report = verify_ledger(locked_run.exchange)
    assert [(p.round_index, p.message) for p in report.problems] == [
        (
            published.round_index,
            "published/model.safetensors has 2 versions: it was overwritten or deleted after it "
            "was written (rewritten history)",
        )
    ]
