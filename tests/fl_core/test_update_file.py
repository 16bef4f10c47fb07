"""A training answer is one file, its manifest inside: what admission and readers make of it."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.testing.manifests import admission_context, update_manifest
from fl_core.admission import check_update_file, update_metadata
from fl_core.errors import UpdateRejectedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import (
    EvaluationReport,
    Registration,
    ScoreHistogram,
    SparseCounts,
    UpdateManifest,
)
from fl_core.exchange.protocol import Exchange
from fl_core.hashing import sha256_hex
from fl_core.serialisation import encode_weights

WEIGHTS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}


def test_a_good_file_gives_its_manifest_digest_and_views():
    update = update_manifest()
    data = encode_weights(WEIGHTS, update_metadata(update))
    got, digest, weights = check_update_file(data, "site-a", admission_context())
    assert got == update
    assert digest == sha256_hex(data)
    np.testing.assert_array_equal(weights["w"], WEIGHTS["w"])


def test_a_digest_the_store_computed_is_used_not_computed_again():
    update = update_manifest()
    data = encode_weights(WEIGHTS, update_metadata(update))
    verified = sha256_hex(data)  # what S3Store.get_verified hands over with the bytes
    _, digest, _ = check_update_file(data, "site-a", admission_context(), sha256=verified)
    assert digest == verified
    with pytest.raises(UpdateRejectedError) as rejected:  # replay protection sees it too
        check_update_file(
            data, "site-a", admission_context(seen_sha256={verified}), sha256=verified
        )
    assert rejected.value.reason == "replayed"


@pytest.mark.parametrize(
    ("data", "ctx", "reason"),
    [
        # no manifest inside
        (encode_weights(WEIGHTS), admission_context(), "malformed_manifest"),
        (
            encode_weights(WEIGHTS, {"fedsilo.manifest": "{not json"}),
            admission_context(),
            "malformed_manifest",
        ),
        (
            encode_weights(
                WEIGHTS, update_metadata(update_manifest(declined="privacy_budget_exhausted"))
            ),
            admission_context(),
            "malformed_manifest",  # a decline has no tensors
        ),
        (
            encode_weights(WEIGHTS, update_metadata(update_manifest())),
            admission_context(
                seen_sha256=frozenset(
                    {sha256_hex(encode_weights(WEIGHTS, update_metadata(update_manifest())))}
                )
            ),
            "replayed",
        ),
        (
            encode_weights(WEIGHTS, update_metadata(update_manifest(site_id="site-b"))),
            admission_context(),
            "site_mismatch",
        ),
        (
            encode_weights(WEIGHTS, update_metadata(update_manifest())),
            admission_context(max_update_bytes=100),
            "too_large",
        ),
    ],
    ids=["no-manifest", "not-json", "declined", "same-bytes", "other-site", "oversized"],
)
def test_bad_files_are_refused_with_a_reason(data, ctx, reason):
    with pytest.raises(UpdateRejectedError) as rejected:
        check_update_file(data, "site-a", ctx)
    assert rejected.value.reason == reason


def test_one_object_per_answer_and_its_manifest_readable_either_way(tmp_path):
    exchange = Exchange(LocalDirectoryStore(tmp_path), "f")
    trained = update_manifest()
    exchange.write_update(trained, encode_weights(WEIGHTS, update_metadata(trained)))
    evaluated = update_manifest(site_id="site-b", task="evaluate", train_loss=None)
    exchange.write_update(evaluated, None)
    files = sorted(p.name for p in (tmp_path / "federations/f/rounds/000002/updates").iterdir())
    assert files == ["site-a.safetensors", "site-b.json"]
    assert sorted(exchange.list_answered_sites(2, ["site-a", "site-b"])) == ["site-a", "site-b"]
    for update in (trained, evaluated):
        raw = exchange.read_update_manifest_bytes(2, update.site_id)
        assert UpdateManifest.model_validate_json(raw) == update


class CountingStore(LocalDirectoryStore):
    """A local store that records which keys were read whole."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.whole_reads: list[str] = []

    def get(self, key: str) -> bytes:
        self.whole_reads.append(key)
        return super().get(key)


@pytest.mark.parametrize("bins", [10, 50_000], ids=["short-header", "header-over-64kB"])
def test_a_training_answers_manifest_is_read_from_its_header_alone(tmp_path, bins):
    store = CountingStore(tmp_path)
    exchange = Exchange(store, "f")
    counts = SparseCounts(index=list(range(bins)), count=[1] * bins)
    report = EvaluationReport(
        num_examples=bins,
        loss_sum=1.0,
        histogram=ScoreHistogram(
            bins=bins, positives=counts, negatives=SparseCounts(index=[], count=[])
        ),
    )
    update = update_manifest(evaluation=report)
    big = {"w": np.zeros((2000, 500), np.float32)}  # 4 MB of tensors that must not be read
    exchange.write_update(update, encode_weights(big, update_metadata(update)))
    raw = exchange.read_update_manifest_bytes(2, "site-a")
    assert UpdateManifest.model_validate_json(raw) == update
    assert not any(key.endswith(".safetensors") for key in store.whole_reads)


def test_registrations_are_re_read_only_when_written(tmp_path):
    store = CountingStore(tmp_path)
    exchange = Exchange(store, "f")
    etags = {}
    for site in ("site-a", "site-b", "site-c"):
        etags[site] = exchange.write_registration(
            Registration(site_id=site, joined_unix=1.0, status="active"), None
        )
    assert {r.site_id for r in exchange.list_registrations()} == {"site-a", "site-b", "site-c"}
    store.whole_reads.clear()
    assert len(exchange.list_registrations()) == 3
    assert store.whole_reads == []  # one listing, no reads: nothing changed
    revoked = Registration(site_id="site-b", joined_unix=1.0, status="revoked")
    exchange.write_registration(revoked, etags["site-b"])
    statuses = {r.site_id: r.status for r in exchange.list_registrations()}
    assert statuses == {"site-a": "active", "site-b": "revoked", "site-c": "active"}
    assert store.whole_reads == [exchange.layout.registry_key("site-b")]
