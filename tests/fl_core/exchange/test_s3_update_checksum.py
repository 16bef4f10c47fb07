"""An update's digest on S3 is the SHA-256 checksum S3 verified on upload, read, not recomputed.

What moto does not verify: moto keeps the ``ChecksumSHA256`` a client sends without checking
it against the body (real S3 refuses such a PUT with ``BadDigest``). These tests use that to
tell a digest taken from S3 from one hashed here, and test what fedsilo itself does: which
checksum it sends, that it reads the stored one with the object, and what it refuses.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from fedsilo.testing.moto_s3 import REGION
from fl_core.errors import ChecksumMissingError, ObjectIntegrityError
from fl_core.exchange.s3_store import S3Store
from fl_core.hashing import sha256_b64

MiB = 1024 * 1024
KEY = "federations/f1/rounds/000001/updates/site-a.safetensors"


def test_the_digest_is_the_checksum_s3_stored_not_a_hash_of_the_bytes(
    raw_s3: Any, mock_bucket: str
) -> None:
    """A checksum of other bytes (which S3 would have refused, moto keeps) comes back as is:
    neither the store nor botocore hashed the body."""
    claimed = b"the bytes the checksum is of"
    raw_s3.put_object(
        Bucket=mock_bucket,
        Key=KEY,
        Body=b"the bytes stored",
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=sha256_b64(claimed),
        Metadata={"sha256": hashlib.sha256(claimed).hexdigest()},
    )
    store = S3Store(mock_bucket, region=REGION)
    data, digest = store.get_verified(KEY)
    assert data == b"the bytes stored"
    assert digest == hashlib.sha256(claimed).hexdigest()
    with pytest.raises(ObjectIntegrityError):  # every other read still hashes
        store.get(KEY)


def test_an_update_is_one_put_with_its_checksum_above_the_multipart_threshold(
    raw_s3: Any, mock_bucket: str
) -> None:
    data = bytes(range(256)) * (7 * MiB // 256)
    store = S3Store(
        mock_bucket, region=REGION, multipart_threshold_bytes=6 * MiB, part_size_bytes=5 * MiB
    )
    sent: list[str] = []
    store.client.meta.events.register(
        "before-send.s3", lambda event_name, **_: sent.append(event_name)
    )
    digest = hashlib.sha256(data).hexdigest()
    store.put_update(KEY, data, digest)
    assert [name.split(".")[-1] for name in sent] == ["PutObject"]
    head = raw_s3.head_object(Bucket=mock_bucket, Key=KEY, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256_b64(data)
    assert store.get_verified(KEY) == (data, digest)


def test_an_update_without_a_sha256_checksum_is_refused(raw_s3: Any, mock_bucket: str) -> None:
    data = b"weights"
    raw_s3.put_object(
        Bucket=mock_bucket,
        Key=KEY,
        Body=data,
        Metadata={"sha256": hashlib.sha256(data).hexdigest()},
    )
    with pytest.raises(ChecksumMissingError, match="no full-object SHA-256 checksum"):
        S3Store(mock_bucket, region=REGION).get_verified(KEY)


def test_a_multipart_update_is_refused_its_sha256_covers_parts_not_the_object(
    mock_bucket: str,
) -> None:
    store = S3Store(
        mock_bucket, region=REGION, multipart_threshold_bytes=6 * MiB, part_size_bytes=5 * MiB
    )
    store.put_new(KEY, b"\1" * (7 * MiB))  # put_new goes multipart; put_update never does
    with pytest.raises(ChecksumMissingError, match="multipart"):
        store.get_verified(KEY)


def test_a_checksum_that_is_not_the_writers_claim_is_refused(raw_s3: Any, mock_bucket: str) -> None:
    data = b"weights"
    raw_s3.put_object(
        Bucket=mock_bucket,
        Key=KEY,
        Body=data,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=sha256_b64(data),
        Metadata={"sha256": "0" * 64},
    )
    with pytest.raises(ObjectIntegrityError, match="claimed") as refused:
        S3Store(mock_bucket, region=REGION).get_verified(KEY)
    assert not isinstance(refused.value, ChecksumMissingError)
