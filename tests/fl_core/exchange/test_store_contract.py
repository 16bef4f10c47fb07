"""One contract, every store: the protocol code may not tell a local folder from S3.

Each test runs against ``LocalDirectoryStore`` in a temporary folder, ``S3Store`` under moto's
in-process mock, and ``S3Store`` over HTTP against moto_server.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from fedsilo.testing.moto_s3 import REGION
from fl_core.errors import (
    ExchangeError,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PreconditionFailedError,
)
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.s3_store import S3Store
from fl_core.exchange.store import ObjectStore

StoreFactory = Callable[[str], ObjectStore]
"""Builds a store rooted at the given prefix; two calls with one prefix share their objects."""


@pytest.fixture(params=["fs", "s3-mock", "s3-server"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    kind = request.param
    if kind == "fs":
        root = tmp_path

        def make_fs(prefix: str) -> ObjectStore:
            return LocalDirectoryStore(root / prefix)

        return make_fs
    if kind == "s3-mock":
        bucket = request.getfixturevalue("mock_bucket")

        def make_mock(prefix: str) -> ObjectStore:
            return S3Store(bucket, prefix, region=REGION)

        return make_mock
    bucket = request.getfixturevalue("server_bucket")
    endpoint = request.getfixturevalue("moto_server")

    def make_server(prefix: str) -> ObjectStore:
        return S3Store(bucket, prefix, endpoint_url=endpoint, region=REGION)

    return make_server


@pytest.fixture
def store(make_store: StoreFactory) -> ObjectStore:
    return make_store("exchange/run-1")


KEY = "federations/f1/rounds/000001/global.safetensors"


def test_put_new_then_get_round_trips(store: ObjectStore) -> None:
    store.put_new(KEY, b"weights")
    assert store.get(KEY) == b"weights"
    data, etag = store.get_with_etag(KEY)
    assert data == b"weights" and etag


def test_get_verified_gives_the_bytes_and_their_sha256_where_the_store_hashed_them(
    store: ObjectStore,
) -> None:
    store.put_new(KEY, b"weights")
    data, digest = store.get_verified(KEY)
    assert data == b"weights"
    if store.describe().startswith("s3://"):  # S3 verifies every read against its sha256
        assert digest == hashlib.sha256(b"weights").hexdigest()
    else:
        assert digest is None  # a local file is hashed by whoever needs its digest


def test_get_verified_refuses_an_object_over_max_bytes_from_its_size(store: ObjectStore) -> None:
    store.put_update(KEY, b"weights", hashlib.sha256(b"weights").hexdigest())
    with pytest.raises(ObjectTooLargeError) as refused:
        store.get_verified(KEY, max_bytes=6)
    assert refused.value.size == 7
    assert store.get_verified(KEY, max_bytes=7)[0] == b"weights"


def test_put_new_is_write_once(store: ObjectStore) -> None:
    store.put_new(KEY, b"first")
    with pytest.raises(ObjectExistsError):
        store.put_new(KEY, b"second")
    with pytest.raises(ObjectExistsError):
        store.put_new(KEY, b"first")  # even the same bytes: a replay is not a write
    assert store.get(KEY) == b"first"


def test_empty_object_round_trips(store: ObjectStore) -> None:
    store.put_new("empty", b"")
    assert store.get("empty") == b""
    assert store.size("empty") == 0


def test_missing_key_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.get("federations/f1/state.json")
    with pytest.raises(ObjectNotFoundError):
        store.get_with_etag("federations/f1/state.json")
    with pytest.raises(ObjectNotFoundError):
        store.size("federations/f1/state.json")
    assert not store.exists("federations/f1/state.json")


def test_replace_creates_only_when_absent(store: ObjectStore) -> None:
    key = "federations/f1/state.json"
    etag = store.replace(key, b'{"round": 1}', None)
    assert store.get_with_etag(key) == (b'{"round": 1}', etag)
    with pytest.raises(PreconditionFailedError):
        store.replace(key, b'{"round": 1}', None)


def test_replace_compares_and_swaps(store: ObjectStore) -> None:
    key = "federations/f1/state.json"
    store.replace(key, b'{"round": 1}', None)
    _, etag_a = store.get_with_etag(key)
    _, etag_b = store.get_with_etag(key)  # a second aggregator read the same state
    new_etag = store.replace(key, b'{"round": 2}', etag_a)
    assert new_etag != etag_a
    with pytest.raises(PreconditionFailedError):
        store.replace(key, b'{"round": 2, "by": "b"}', etag_b)
    assert store.get_with_etag(key) == (b'{"round": 2}', new_etag)
    assert store.replace(key, b'{"round": 3}', new_etag)


def test_replace_with_etag_of_missing_key_fails(store: ObjectStore) -> None:
    store.replace("other.json", b"x", None)
    _, etag = store.get_with_etag("other.json")
    with pytest.raises(PreconditionFailedError):
        store.replace("federations/f1/state.json", b"y", etag)
    assert not store.exists("federations/f1/state.json")


def test_size_and_exists(store: ObjectStore) -> None:
    store.put_new(KEY, b"x" * 1234)
    assert store.size(KEY) == 1234
    assert store.exists(KEY)
    assert not store.exists(KEY + ".json")


def test_get_head_reads_the_first_bytes_only(store: ObjectStore) -> None:
    store.put_new("a/head.bin", bytes(range(200)))
    assert store.get_head("a/head.bin", 8) == bytes(range(8))
    assert store.get_head("a/head.bin", 1000) == bytes(range(200))  # shorter than asked
    store.put_new("a/empty.bin", b"")
    assert store.get_head("a/empty.bin", 8) == b""
    with pytest.raises(ObjectNotFoundError):
        store.get_head("a/missing.bin", 8)


def test_list_versions_change_exactly_when_an_object_is_written(store: ObjectStore) -> None:
    etag = store.replace("reg/a.json", b"one", None)
    store.put_new("reg/b.json", b"two")
    store.put_new("other/c.json", b"three")
    first = store.list_versions("reg/")
    assert sorted(first) == store.list_keys("reg/") == ["reg/a.json", "reg/b.json"]
    assert store.list_versions("reg/") == first  # nothing written: nothing changed
    store.replace("reg/a.json", b"one, revised", etag)
    second = store.list_versions("reg/")
    assert second["reg/a.json"] != first["reg/a.json"]
    assert second["reg/b.json"] == first["reg/b.json"]


def test_list_keys_sorted_and_prefix_scoped(store: ObjectStore) -> None:
    keys = [
        "federations/f1/rounds/000002/updates/site-b.json",
        "federations/f1/rounds/000001/updates/site-b.json",
        "federations/f1/rounds/000001/updates/site-a.json",
        "federations/f1/rounds/000001/global.json",
        "federations/f10/state.json",
        "federations/f1/state.json",
    ]
    for key in keys:
        store.put_new(key, b"{}")
    assert store.list_keys("") == sorted(keys)
    assert store.list_keys("federations/f1/rounds/000001/updates/") == [
        "federations/f1/rounds/000001/updates/site-a.json",
        "federations/f1/rounds/000001/updates/site-b.json",
    ]
    assert "federations/f10/state.json" not in store.list_keys("federations/f1/")
    assert store.list_keys("federations/f2/") == []
    assert store.list_keys("federations/f1/rounds/000001/up") == [
        "federations/f1/rounds/000001/updates/site-a.json",
        "federations/f1/rounds/000001/updates/site-b.json",
    ]


def test_list_keys_prefix_is_a_string_prefix(store: ObjectStore) -> None:
    """``f1`` matches ``f10/`` too, as in S3, for every store."""
    store.put_new("federations/f1/state.json", b"{}")
    store.put_new("federations/f10/state.json", b"{}")
    assert store.list_keys("federations/f1") == [
        "federations/f1/state.json",
        "federations/f10/state.json",
    ]


def test_prefix_maps_keys_and_isolates_stores(make_store: StoreFactory) -> None:
    run_1 = make_store("exchange/run-1")
    same = make_store("exchange/run-1")
    run_2 = make_store("exchange/run-2")
    run_1.put_new(KEY, b"one")
    assert same.get(KEY) == b"one"
    assert run_2.list_keys("") == []
    assert not run_2.exists(KEY)
    run_2.put_new(KEY, b"two")  # same relative key, another prefix: no clash
    assert run_1.get(KEY) == b"one"
    assert run_1.list_keys("") == [KEY]


@pytest.mark.parametrize("bad_key", ["", "/abs", "a/../b", ".."])
def test_invalid_keys_rejected(store: ObjectStore, bad_key: str) -> None:
    with pytest.raises(ExchangeError):
        store.put_new(bad_key, b"x")


def test_describe_names_the_location(store: ObjectStore) -> None:
    assert "run-1" in store.describe()
    assert "testing" not in store.describe()


def test_concurrent_replace_has_one_winner(
    make_store: StoreFactory, request: pytest.FixtureRequest
) -> None:
    """Eight writers holding one etag race; exactly one wins, the others learn they lost.

    Not run under moto's in-process mock: its conditional check is not atomic across threads
    (moto_server is made atomic by its fixture; real S3 is atomic).
    """
    if request.node.callspec.params["make_store"] == "s3-mock":
        pytest.skip("moto's in-process mock does not check conditions atomically")
    key = "federations/f1/state.json"
    writers = [make_store("exchange/run-1") for _ in range(8)]
    writers[0].replace(key, b"round-1", None)
    _, etag = writers[0].get_with_etag(key)
    barrier = threading.Barrier(len(writers))
    outcomes: list[str] = []

    def race(index: int, writer: ObjectStore) -> None:
        barrier.wait()
        try:
            writer.replace(key, f"round-2-by-{index}".encode(), etag)
            outcomes.append(f"won-{index}")
        except PreconditionFailedError:
            outcomes.append("lost")

    threads = [threading.Thread(target=race, args=item) for item in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [outcome for outcome in outcomes if outcome.startswith("won")]
    assert len(outcomes) == len(writers)
    assert len(winners) == 1
    assert writers[0].get(key) == f"round-2-by-{winners[0].split('-')[1]}".encode()


def test_get_bounded_refuses_an_object_over_max_bytes_from_its_size(store: ObjectStore) -> None:
    store.put_new(KEY, b"manifest")
    with pytest.raises(ObjectTooLargeError) as refused:
        store.get_bounded(KEY, max_bytes=7)
    assert refused.value.size == 8
    assert store.get_bounded(KEY, max_bytes=8) == b"manifest"
    with pytest.raises(ObjectNotFoundError):
        store.get_bounded("absent", max_bytes=8)
