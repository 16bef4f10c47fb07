"""A round on an S3 exchange (moto): each update's digest is the checksum S3 stored with it.

What moto does not verify: it keeps whatever ``ChecksumSHA256`` a client sends without
checking the body against it (real S3 refuses the PUT with ``BadDigest``). So these tests
check what fedsilo does with the checksum S3 hands back: admission takes it as the update's
sha256 and records its source in the decision and the ledger, refuses an update that has none
(``missing_checksum``), a resumed round re-adds updates against it, and ``ledger verify``
hashes the files itself and compares S3's checksum too.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np
import pytest

from fedsilo.testing.manifests import answer_to
from fedsilo.testing.moto_s3 import REGION
from fl_core.admission import update_metadata
from fl_core.config import FederationConfig, load_config
from fl_core.exchange.ledger import verify_ledger
from fl_core.exchange.manifests import GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.s3_store import S3Store
from fl_core.serialisation import encode_weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop

SITES = ["site-a", "site-b", "site-c"]
INITIAL = {"w": np.zeros((3, 2), np.float32)}
PREFIX = "exchange"


def config() -> FederationConfig:
    return load_config(
        overrides={
            "federation_id": "s3digest",
            "rounds": 1,
            "round.min_sites": 2,
            "round.deadline_s": 100.0,
            "round.poll_interval_s": 1.0,
            "round.lease_s": 30.0,
            "round.checkpoint_interval_s": 0.0,
            "data.synthetic.hospitals": len(SITES),
        }
    )


def signed_update(manifest: GlobalManifest, site: str) -> bytes:
    update = answer_to(manifest, site)
    rng = np.random.default_rng(SITES.index(site))
    weights = {"w": rng.normal(size=(3, 2)).astype(np.float32)}
    return encode_weights(weights, update_metadata(update))


class Hospitals(RoundEvents):
    """site-a and site-b upload as fedsilo does; site-c without a SHA-256 checksum."""

    def __init__(self, exchange: Exchange, raw_s3: Any, bucket: str) -> None:
        self.exchange, self.raw_s3, self.bucket = exchange, raw_s3, bucket

    def round_opened(self, manifest: GlobalManifest) -> None:
        if self.exchange.list_answered_sites(manifest.round_index):
            return
        if manifest.task == "evaluate":
            for site in SITES:
                self.exchange.write_update(answer_to(manifest, site), None)
            return
        for site in ("site-a", "site-b"):
            self.exchange.write_update(answer_to(manifest, site), signed_update(manifest, site))
        data = signed_update(manifest, "site-c")
        key = self.exchange.layout.update_weights_key(manifest.round_index, "site-c")
        self.raw_s3.put_object(
            Bucket=self.bucket,
            Key=f"{PREFIX}/{key}",
            Body=data,
            Metadata={"sha256": hashlib.sha256(data).hexdigest()},
        )


class Honest(RoundEvents):
    """``sites`` answer each training round as fedsilo does; every site evaluates."""

    def __init__(self, exchange: Exchange, sites: list[str]) -> None:
        self.exchange, self.sites = exchange, sites

    def round_opened(self, manifest: GlobalManifest) -> None:
        answered = set(self.exchange.list_answered_sites(manifest.round_index))
        for site in SITES if manifest.task == "evaluate" else self.sites:
            if site not in answered:
                data = signed_update(manifest, site) if manifest.task == "train" else None
                self.exchange.write_update(answer_to(manifest, site), data)


class Crash(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


def run_round(
    bucket: str,
    raw_s3: Any,
    events: RoundEvents | None = None,
    prefix: str = PREFIX,
    sleep: Any = None,
) -> Exchange:
    exchange = Exchange(S3Store(bucket, prefix, region=REGION), "s3digest")
    now = [1_000_000.0]
    loop = RoundLoop(
        exchange,
        FedAvgAggregator(),
        config(),
        SITES,
        initial_weights=INITIAL,
        events=events or Hospitals(exchange, raw_s3, bucket),
        clock=lambda: now[0],
        sleep=sleep or (lambda seconds: now.__setitem__(0, now[0] + seconds)),
        owner_id="agg-1",
    )
    loop.run()
    return exchange


def final_model_bytes(exchange: Exchange) -> bytes:
    manifest = exchange.read_global_manifest(2)
    assert manifest is not None
    return exchange.read_global_weights(manifest)


def test_admission_takes_s3s_checksum_and_refuses_an_update_without_one(
    raw_s3: Any, mock_bucket: str
) -> None:
    exchange = run_round(mock_bucket, raw_s3)
    result = exchange.read_result(1)
    assert result is not None
    assert {d.site_id: d.sha256_source for d in result.accepted} == {
        "site-a": "s3_checksum",
        "site-b": "s3_checksum",
    }
    for decision in result.accepted:
        key = f"{PREFIX}/{exchange.layout.update_weights_key(1, decision.site_id)}"
        head = raw_s3.head_object(Bucket=mock_bucket, Key=key, ChecksumMode="ENABLED")
        assert base64.b64decode(head["ChecksumSHA256"]).hex() == decision.sha256
    assert [(d.site_id, d.reason) for d in result.rejected] == [("site-c", "missing_checksum")]
    entry = exchange.read_ledger_entry(1)
    assert entry is not None
    assert entry.sha256_sources == {"site-a": "s3_checksum", "site-b": "s3_checksum"}
    report = verify_ledger(exchange)
    assert report.ok, report.summary()
    assert report.digest_sources == {"s3_checksum": 2}


def test_ledger_verify_hashes_the_update_and_compares_s3s_checksum(
    raw_s3: Any, mock_bucket: str
) -> None:
    """An admitted update replaced by bytes with a consistent checksum and claim (moto has no
    Object Lock here to stop it) is found by hashing; one replaced by a checksum S3 would
    have refused, by comparing the checksum."""
    exchange = run_round(mock_bucket, raw_s3)
    for site, stored_checksum_of in (("site-a", b"other"), ("site-b", None)):
        key = f"{PREFIX}/{exchange.layout.update_weights_key(1, site)}"
        original = raw_s3.get_object(Bucket=mock_bucket, Key=key)["Body"].read()
        body = original if stored_checksum_of is not None else original + b" "
        checksum_of = stored_checksum_of or body
        raw_s3.put_object(
            Bucket=mock_bucket,
            Key=key,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(hashlib.sha256(checksum_of).digest()).decode(),
            Metadata={"sha256": hashlib.sha256(checksum_of).hexdigest()},
        )
    messages = [p.message for p in verify_ledger(exchange).problems]
    assert "S3's stored checksum of the update file of site-a differs" in messages
    assert "update file of site-b was altered (sha256 differs)" in messages


def test_a_round_resumed_mid_way_re_adds_updates_against_s3s_checksum_to_the_same_bytes(
    raw_s3: Any, mock_bucket: str
) -> None:
    """Checkpointed decisions are re-added after a crash (their digests read from S3 again,
    not hashed), then the late answer: the model is byte for byte the uninterrupted one's."""
    uninterrupted = Exchange(S3Store(mock_bucket, "uninterrupted", region=REGION), "s3digest")
    run_round(mock_bucket, raw_s3, Honest(uninterrupted, SITES), prefix="uninterrupted")

    exchange = Exchange(S3Store(mock_bucket, PREFIX, region=REGION), "s3digest")

    def crash(_seconds: float) -> None:
        raise Crash()

    with pytest.raises(Crash):
        run_round(mock_bucket, raw_s3, Honest(exchange, SITES[:2]), sleep=crash)
    found = exchange.read_state()
    assert found is not None and sorted(found[0].decisions) == SITES[:2]
    run_round(mock_bucket, raw_s3, Honest(exchange, SITES))
    result = exchange.read_result(1)
    assert result is not None
    assert [d.site_id for d in result.accepted] == SITES
    assert {d.sha256_source for d in result.accepted} == {"s3_checksum"}
    assert final_model_bytes(exchange) == final_model_bytes(uninterrupted)
