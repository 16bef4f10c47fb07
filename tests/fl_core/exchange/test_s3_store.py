"""What only the S3 store does: encryption, checksums, multipart, retries, roles, edge faults.

Faults are injected with botocore event hooks on the store's own client: a ``before-send``
handler that returns a response short-circuits the HTTP request (moto_server never sees it),
and one that raises ``ConnectionClosedError`` looks like a reset connection. Under moto's
in-process mock the mock still runs after such a handler, which models the other fault: the
write landed but its reply was lost.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ClientError, ConnectionClosedError, ResponseStreamingError
from moto.sts.models import sts_backends

from fedsilo.testing.moto_s3 import REGION
from fedsilo.testing.s3_faults import Injector, error_response
from fl_core.errors import (
    BucketNotFoundError,
    ConfigError,
    EndpointUnreachableError,
    ExchangeError,
    KmsKeyError,
    ObjectExistsError,
    ObjectIntegrityError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreAccessDeniedError,
    StoreCredentialsError,
)
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.s3_store import S3Store
from fl_core.exchange.uri import open_store
from fl_core.hashing import sha256_b64

MiB = 1024 * 1024
KEY = "federations/f1/rounds/000001/global.safetensors"


# --------------------------------------------------------------------------- helpers


def slow_down(request: AWSPreparedRequest) -> AWSResponse:
    return error_response(request, 503, "SlowDown")


def reset_connection(request: AWSPreparedRequest) -> AWSResponse:
    raise ConnectionClosedError(endpoint_url=request.url)


class Recorder:
    """Records the operation name and headers of every request a client sends."""

    def __init__(self, client: Any) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        client.meta.events.register("before-send.s3", self)

    def __call__(self, request: AWSPreparedRequest, event_name: str, **_: Any) -> None:
        headers = {
            name: value.decode() if isinstance(value, bytes) else value
            for name, value in request.headers.items()
        }
        self.requests.append((event_name.split(".")[-1], headers))

    def ops(self) -> list[str]:
        return [op for op, _ in self.requests]

    def headers_of(self, op: str) -> list[dict[str, str]]:
        return [headers for name, headers in self.requests if name == op]


@pytest.fixture
def kms_key_arn(mocked_aws: None) -> str:
    kms = boto3.client("kms", region_name=REGION)
    return str(kms.create_key(Description="fedsilo exchange")["KeyMetadata"]["Arn"])


@pytest.fixture
def small_parts() -> dict[str, Any]:
    """Multipart above 6 MiB in 5 MiB parts (S3's minimum), instead of 256 MiB / 16 MiB."""
    return {
        "multipart_threshold_bytes": 6 * MiB,
        "part_size_bytes": 5 * MiB,
        "ranged_download_threshold_bytes": 6 * MiB,
    }


# ------------------------------------------------------------------ encryption, checksums


def test_writes_use_sse_kms_with_the_configured_key(
    raw_s3: Any, mock_bucket: str, kms_key_arn: str, small_parts: dict[str, Any]
) -> None:
    store = S3Store(mock_bucket, "x", region=REGION, kms_key_id=kms_key_arn, **small_parts)
    store.put_new("small.json", b"{}")
    store.put_new("large.bin", b"\1" * (11 * MiB))
    store.replace("federations/f1/state.json", b"{}", None)
    for key in ("x/small.json", "x/large.bin", "x/federations/f1/state.json"):
        head = raw_s3.head_object(Bucket=mock_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == kms_key_arn


def test_without_key_id_no_encryption_header_is_sent(mock_bucket: str) -> None:
    """The bucket's default (the federation CMK) applies, never the per-account aws/s3 key."""
    store = S3Store(mock_bucket, region=REGION)
    recorder = Recorder(store.client)
    store.put_new("a", b"x")
    (headers,) = recorder.headers_of("PutObject")
    assert not any(name.lower().startswith("x-amz-server-side-encryption") for name in headers)


def test_sha256_checksum_and_digest_travel_with_the_object(raw_s3: Any, mock_bucket: str) -> None:
    data = b"weights" * 1000
    store = S3Store(mock_bucket, region=REGION)
    store.put_new(KEY, data)
    head = raw_s3.head_object(Bucket=mock_bucket, Key=KEY, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256_b64(data)
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert store.get(KEY) == data


def test_download_fails_when_s3_checksum_does_not_match(raw_s3: Any, mock_bucket: str) -> None:
    data = b"weights"
    raw_s3.put_object(
        Bucket=mock_bucket,
        Key=KEY,
        Body=data,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=sha256_b64(b"something else"),
        Metadata={"sha256": hashlib.sha256(data).hexdigest()},
    )
    with pytest.raises(ObjectIntegrityError, match="SHA-256 check"):
        S3Store(mock_bucket, region=REGION).get(KEY)


@pytest.mark.parametrize(
    ("metadata", "match"),
    [({"sha256": "0" * 64}, "corrupt or was altered"), ({}, "not written by fedsilo")],
)
def test_download_fails_when_digest_is_wrong_or_missing(
    raw_s3: Any, mock_bucket: str, metadata: dict[str, str], match: str
) -> None:
    raw_s3.put_object(Bucket=mock_bucket, Key=KEY, Body=b"weights", Metadata=metadata)
    with pytest.raises(ObjectIntegrityError, match=match):
        S3Store(mock_bucket, region=REGION).get(KEY)


# ---------------------------------------------------------------------------- multipart


def test_large_object_goes_multipart_and_stays_write_once(
    raw_s3: Any, mock_bucket: str, small_parts: dict[str, Any]
) -> None:
    data = bytes(range(256)) * (11 * MiB // 256 + 7)  # 3 parts, the last one short
    store = S3Store(mock_bucket, region=REGION, **small_parts)
    recorder = Recorder(store.client)
    store.put_new(KEY, data)
    assert recorder.ops().count("UploadPart") == 3
    assert "PutObject" not in recorder.ops()
    (complete,) = recorder.headers_of("CompleteMultipartUpload")
    assert complete["If-None-Match"] == "*"
    assert all(h["x-amz-checksum-sha256"] for h in recorder.headers_of("UploadPart"))
    assert raw_s3.head_object(Bucket=mock_bucket, Key=KEY)["ETag"].endswith('-3"')

    recorder.requests.clear()
    assert store.get(KEY) == data
    ranged = [h["Range"] for h in recorder.headers_of("GetObject") if "Range" in h]
    assert ranged == [f"bytes={5 * MiB}-{10 * MiB - 1}", f"bytes={10 * MiB}-{len(data) - 1}"]
    assert all("If-Match" in h for h in recorder.headers_of("GetObject") if "Range" in h)

    with pytest.raises(ObjectExistsError):
        store.put_new(KEY, data[::-1])
    assert store.get(KEY) == data
    assert not raw_s3.list_multipart_uploads(Bucket=mock_bucket).get("Uploads")  # aborted


def test_failed_multipart_is_aborted(
    moto_server: str, server_bucket: str, small_parts: dict[str, Any]
) -> None:
    store = S3Store(
        server_bucket, endpoint_url=moto_server, region=REGION, max_attempts=1, **small_parts
    )
    store.client.meta.events.register(
        "before-send.s3.CompleteMultipartUpload",
        Injector(lambda r: error_response(r, 400, "InvalidPart"), times=99),
    )
    with pytest.raises(ExchangeError, match="InvalidPart"):
        store.put_new(KEY, b"\0" * (7 * MiB))
    raw = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    assert not raw.list_multipart_uploads(Bucket=server_bucket).get("Uploads")
    assert not store.exists(KEY)


# ------------------------------------------------------------------------------ retries


@pytest.mark.parametrize("fault", [slow_down, reset_connection], ids=["503-slowdown", "reset"])
@pytest.mark.parametrize("op", ["PutObject", "GetObject"])
def test_transient_faults_are_retried_by_botocore(
    moto_server: str, server_bucket: str, fault: Callable[..., AWSResponse], op: str
) -> None:
    store = S3Store(server_bucket, endpoint_url=moto_server, region=REGION)
    injector = Injector(fault, times=2 if fault is reset_connection else 1)
    store.client.meta.events.register(f"before-send.s3.{op}", injector)
    store.put_new(KEY, b"weights")
    assert store.get(KEY) == b"weights"
    assert injector.calls == injector.times + 1


def test_retries_give_up_with_one_line(moto_server: str, server_bucket: str) -> None:
    store = S3Store(server_bucket, endpoint_url=moto_server, region=REGION, max_attempts=2)
    store.client.meta.events.register("before-send.s3.PutObject", Injector(slow_down, times=99))
    with pytest.raises(ExchangeError, match="SlowDown") as info:
        store.put_new(KEY, b"weights")
    assert "\n" not in str(info.value)
    assert not store.exists(KEY)


@pytest.mark.parametrize("op", ["PutObject", "CompleteMultipartUpload"])
def test_write_whose_reply_was_lost_counts_as_done(
    mock_bucket: str, small_parts: dict[str, Any], op: str
) -> None:
    """moto writes, the client sees 503 and retries into its own object: still a success."""
    store = S3Store(mock_bucket, region=REGION, **small_parts)
    injector = Injector(slow_down, times=1)
    store.client.meta.events.register(f"before-send.s3.{op}", injector)
    data = b"\7" * (7 * MiB if op == "CompleteMultipartUpload" else 10)
    store.put_new(KEY, data)
    assert injector.calls == 2
    assert store.get(KEY) == data
    with pytest.raises(ObjectExistsError):  # a real second writer still loses
        S3Store(mock_bucket, region=REGION).put_new(KEY, data)


def test_replace_whose_reply_was_lost_returns_the_new_etag(mock_bucket: str) -> None:
    store = S3Store(mock_bucket, region=REGION)
    first = store.replace("state.json", b"round 1", None)
    injector = Injector(slow_down, times=1)
    store.client.meta.events.register("before-send.s3.PutObject", injector)
    second = store.replace("state.json", b"round 2", first)
    assert injector.calls == 2
    assert store.get_with_etag("state.json") == (b"round 2", second)


def test_conflict_409_is_retried_then_lost_race_reported(
    moto_server: str, server_bucket: str
) -> None:
    store = S3Store(server_bucket, endpoint_url=moto_server, region=REGION)
    conflict = Injector(lambda r: error_response(r, 409, "ConditionalRequestConflict"), times=1)
    store.client.meta.events.register("before-send.s3.PutObject", conflict)
    store.put_new(KEY, b"a")  # one 409, then the retry writes
    assert conflict.calls == 2
    always = Injector(lambda r: error_response(r, 409, "ConditionalRequestConflict"), times=99)
    store.client.meta.events.register("before-send.s3.PutObject", always)
    with pytest.raises(ObjectExistsError):
        store.put_new("other", b"b")


class _CutBody:
    """A body whose connection drops after the headers arrived."""

    def read(self) -> bytes:
        raise ResponseStreamingError(error="connection reset mid-body")

    def close(self) -> None:
        return None


@pytest.mark.parametrize("cuts", [1, 3])
def test_body_cut_mid_stream_is_read_again(
    mock_bucket: str, small_parts: dict[str, Any], cuts: int
) -> None:
    """botocore retries requests, not bodies; a GET cut mid-body is repeated here."""
    store = S3Store(mock_bucket, region=REGION, **small_parts)
    store.put_new(KEY, b"weights")
    seen: list[int] = []

    def cut(parsed: dict[str, Any], **_: Any) -> None:
        seen.append(1)
        if len(seen) <= cuts:
            parsed["Body"] = _CutBody()

    store.client.meta.events.register("after-call.s3.GetObject", cut)
    if cuts < 3:
        assert store.get(KEY) == b"weights"
        assert len(seen) == cuts + 1
    else:
        with pytest.raises(EndpointUnreachableError, match="mid-body 3 times"):
            store.get(KEY)


# --------------------------------------------------------------------------- assume role


def test_assumes_configured_role_with_external_id(mocked_aws: None, mock_bucket: str) -> None:
    role_arn = "arn:aws:iam::111122223333:role/fedsilo-hospital-a"
    store = S3Store(
        mock_bucket,
        "x",
        region=REGION,
        role_arn=role_arn,
        external_id="ext-123",
        session_name="site-a",
    )
    recorder = Recorder(store.client)
    store.put_new("a", b"x")
    assert store.get("a") == b"x"
    auth = recorder.headers_of("PutObject")[0]["Authorization"]
    access_key = auth.split("Credential=")[1].split("/")[0]
    assert access_key != "testing"
    assumed = sts_backends["111122223333"]["aws"].get_assumed_role_from_access_key(access_key)
    assert assumed is not None
    assert (assumed.role_arn, assumed.external_id, assumed.session_name) == (
        role_arn,
        "ext-123",
        "site-a",
    )


def test_external_id_without_role_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="role_arn"):
        S3Store("bucket", external_id="x")


# --------------------------------------------------------------------- edge faults mapped


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text
    assert "testing" not in text  # never a credential
    assert "Signature" not in text and "X-Amz-" not in text  # never a presigned URL
    return text


def test_missing_bucket(mocked_aws: None) -> None:
    store = S3Store("no-such-bucket", region=REGION)
    for call in (
        lambda: store.put_new("a", b"x"),
        lambda: store.get("a"),
        lambda: store.exists("a"),
        lambda: store.size("a"),
        lambda: store.list_keys(""),
    ):
        with pytest.raises(BucketNotFoundError) as info:
            call()
        assert "'no-such-bucket' does not exist" in _one_line(info.value)


@pytest.mark.parametrize(
    ("status", "code", "error", "hint"),
    [
        (400, "KMS.NotFoundException", KmsKeyError, "check the KMS key id"),
        (403, "KMS.DisabledException", KmsKeyError, "check the KMS key id"),
        (400, "ExpiredToken", StoreCredentialsError, "refresh or fix the AWS credentials"),
        (403, "InvalidAccessKeyId", StoreCredentialsError, "refresh or fix the AWS credentials"),
        (403, "AccessDenied", StoreAccessDeniedError, "check the IAM role policy"),
    ],
)
def test_service_faults_map_to_one_line(
    mock_bucket: str, status: int, code: str, error: type[Exception], hint: str
) -> None:
    store = S3Store(mock_bucket, region=REGION, kms_key_id="alias/wrong")
    store.client.meta.events.register(
        "before-send.s3", Injector(lambda r: error_response(r, status, code), times=99)
    )
    with pytest.raises(error) as info:
        store.put_new(KEY, b"x")
    assert hint in _one_line(info.value) and code in str(info.value)
    assert isinstance(info.value.__cause__, ClientError)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_missing_credentials(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("AWS_SECURITY_TOKEN")
    store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{closed_port}", region=REGION)
    with pytest.raises(StoreCredentialsError, match="no AWS credentials found") as info:
        store.put_new(KEY, b"x")
    _one_line(info.value)


def test_endpoint_that_refuses(aws_env: None, closed_port: int) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}"
    store = S3Store("bucket", endpoint_url=endpoint, region=REGION, max_attempts=2)
    with pytest.raises(EndpointUnreachableError, match=f"endpoint {endpoint}/? did not answer"):
        store.get(KEY)


def test_endpoint_that_never_answers(aws_env: None) -> None:
    """A peer that accepts the connection and then says nothing: botocore's read timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        store = S3Store(
            "bucket",
            endpoint_url=f"http://127.0.0.1:{port}",
            region=REGION,
            max_attempts=2,
            read_timeout_s=0.2,
            connect_timeout_s=0.2,
        )
        with pytest.raises(EndpointUnreachableError, match="ReadTimeoutError") as info:
            store.exists(KEY)
        _one_line(info.value)


# --------------------------------------------------------------- moto_server over HTTP


def test_store_over_http_against_moto_server(moto_server: str, server_bucket: str) -> None:
    store = open_store(f"s3://{server_bucket}/runs/r1", endpoint_url=moto_server, region=REGION)
    assert isinstance(store, S3Store)
    store.put_new(KEY, b"weights")
    assert store.list_keys("federations/") == [KEY]
    raw = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    assert raw.get_object(Bucket=server_bucket, Key=f"runs/r1/{KEY}")["Body"].read() == b"weights"
    assert f"at {moto_server}" in store.describe()


def _race_replace(
    endpoint: str, bucket: str, etag: str, name: str, barrier: Any, results: Any
) -> None:
    """One aggregator process: wait for the other, then try to advance state.json."""
    store = S3Store(bucket, "race", endpoint_url=endpoint, region=REGION)
    store.exists("warm-up")  # connect before the race so both start level
    barrier.wait(timeout=60)
    try:
        store.replace("federations/f1/state.json", f"round 2 by {name}".encode(), etag)
        results.put(("won", name))
    except PreconditionFailedError:
        results.put(("lost", name))
    except Exception as err:  # report anything else to the parent instead of dying silently
        results.put((f"error {type(err).__name__}: {err}", name))


def test_two_processes_racing_replace_one_wins(moto_server: str, server_bucket: str) -> None:
    store = S3Store(server_bucket, "race", endpoint_url=moto_server, region=REGION)
    etag = store.replace("federations/f1/state.json", b"round 1", None)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_race_replace, args=(moto_server, server_bucket, etag, name, barrier, results)
        )
        for name in ("agg-a", "agg-b")
    ]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert [outcome for outcome, _ in outcomes] == ["lost", "won"], outcomes
    winner = next(name for outcome, name in outcomes if outcome == "won")
    assert store.get("federations/f1/state.json") == f"round 2 by {winner}".encode()


# ------------------------------------------------------------------------------ open_store


def test_open_store_local_forms(tmp_path: Any) -> None:
    assert isinstance(open_store(f"file://{tmp_path}/a"), LocalDirectoryStore)
    plain = open_store(str(tmp_path / "b"))
    assert isinstance(plain, LocalDirectoryStore)
    assert plain.describe() == f"file://{tmp_path / 'b'}"
    assert isinstance(open_store(str(tmp_path / "c"), region=REGION), LocalDirectoryStore)


def test_open_store_s3_maps_bucket_and_prefix(aws_env: None) -> None:
    store = open_store("s3://fedsilo-exchange/runs/r1/", kms_key_id="alias/fedsilo")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == ("fedsilo-exchange", "runs/r1/")
    assert open_store("s3://fedsilo-exchange").prefix == ""  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("uri", "kwargs", "match"),
    [
        ("gs://bucket/x", {}, "unsupported scheme 'gs'"),
        ("", {}, "empty"),
        ("file://host/x", {}, "not a local absolute path"),
        ("s3://Bad_Bucket/x", {}, "bucket name"),
        ("s3:///x", {}, "use s3://bucket/prefix"),
        ("/tmp/x", {"kms_key_id": "k"}, "only apply to s3://"),
        ("s3://bucket/x", {"endpoint_url": "http://10.0.0.5:9000"}, "TLS only"),
        ("s3://bucket/x", {"endpoint_url": "ftp://h"}, "endpoint URL"),
    ],
)
def test_open_store_rejects_bad_input(uri: str, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        open_store(uri, **kwargs)
    assert info.value.exit_code == 2
    if "scheme" in match:
        assert "file:///" in str(info.value) and "s3://bucket/prefix" in str(info.value)


def test_local_exchange_does_not_import_boto3(tmp_path: Any) -> None:
    code = (
        "import sys; from fl_core.exchange.uri import open_store; "
        f"open_store('file://{tmp_path}'); "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


def test_threads_share_one_store(moto_server: str, server_bucket: str) -> None:
    """The round loop downloads updates from worker threads: one client, many threads."""
    store = S3Store(server_bucket, endpoint_url=moto_server, region=REGION)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            store.put_new(f"u/{i}", bytes([i]) * 100)
            assert store.get(f"u/{i}") == bytes([i]) * 100
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(store.list_keys("u/")) == 8


def test_missing_key_is_not_found_over_http(moto_server: str, server_bucket: str) -> None:
    store = S3Store(server_bucket, endpoint_url=moto_server, region=REGION)
    with pytest.raises(ObjectNotFoundError):
        store.get("nope")
    assert not store.exists("nope")
