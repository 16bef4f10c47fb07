"""An object the store will not hand over is ``ObjectUnreadableError``, not a broken store.

A hospital can write its answer so that the aggregator cannot read it: with a customer key
(SSE-C), under a KMS key of its own, or (in a local exchange) with no read permission. The
stores say so with a type the round loop turns into one rejection.

moto (5.x) stores an SSE-C or foreign-KMS object and serves it to anyone, so S3's refusals
are injected as S3 sends them (a ``before-send`` hook on the store's own client returns the
response; moto_server never sees the request); moto's IAM enforcement gives a real 403.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedsilo.testing.moto_iam import (
    ALLOW_EVERYTHING,
    create_user_key,
    enforce_iam,
    stop_enforcing_iam,
)
from fedsilo.testing.moto_s3 import REGION
from fedsilo.testing.s3_faults import KMS_MESSAGE, SSE_C_MESSAGE, Injector, error_response, refusal
from fl_core.errors import (
    AccessDeniedError,
    KmsKeyError,
    ObjectAccessDeniedError,
    ObjectNotFoundError,
    ObjectUnreadableError,
    StoreAccessDeniedError,
    StoreCredentialsError,
    UnreadableKmsObjectError,
)
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.s3_store import S3Store

KEY = "federations/f1/rounds/000001/updates/site-b.safetensors"


@pytest.fixture
def store(server_bucket: str, moto_server: str) -> S3Store:
    written = S3Store(server_bucket, endpoint_url=moto_server, region=REGION)
    written.put_new(KEY, b"an answer")
    return written


@pytest.mark.parametrize(
    ("status", "code", "message", "error"),
    [
        (400, "InvalidRequest", SSE_C_MESSAGE, ObjectUnreadableError),
        (403, "AccessDenied", KMS_MESSAGE, UnreadableKmsObjectError),
        (400, "KMS.DisabledException", "key is disabled", UnreadableKmsObjectError),
        (403, "InvalidObjectState", "The operation is not valid for the object's storage class",
         ObjectUnreadableError),
        (403, "AccessDenied", "Access Denied", ObjectAccessDeniedError),
    ],
    ids=["sse-c", "foreign-kms-key", "kms-disabled", "archived", "denied"],
)  # fmt: skip
def test_a_refused_read_is_unreadable(
    store: S3Store, status: int, code: str, message: str, error: type[Exception]
) -> None:
    store.client.meta.events.register(
        "before-send.s3", Injector(refusal(status, code, message), times=99)
    )
    for read in (store.get, store.get_verified, lambda key: store.get_head(key, 64)):
        with pytest.raises(error) as info:
            read(KEY)
        assert isinstance(info.value, ObjectUnreadableError)
        assert KEY in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ObjectUnreadableError):  # a HEAD's answer is its status alone
        store.size(KEY)


def test_an_sse_c_refusal_names_the_customer_key(store: S3Store) -> None:
    store.client.meta.events.register(
        "before-send.s3", Injector(refusal(400, "InvalidRequest", SSE_C_MESSAGE), times=1)
    )
    with pytest.raises(ObjectUnreadableError, match="customer-provided encryption key"):
        store.get(KEY)


def test_a_denied_read_is_still_not_yet_to_a_hospital_and_kms_still_names_kms(
    store: S3Store,
) -> None:
    """A hospital's poller catches ``AccessDeniedError`` for a key it may not list."""
    assert issubclass(ObjectAccessDeniedError, AccessDeniedError)
    assert issubclass(UnreadableKmsObjectError, KmsKeyError)
    store.client.meta.events.register(
        "before-send.s3", Injector(refusal(403, "AccessDenied", "Access Denied"), times=1)
    )
    with pytest.raises(AccessDeniedError):
        store.get(KEY)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(403, "AccessDenied", StoreAccessDeniedError), (400, "ExpiredToken", StoreCredentialsError)],
)
def test_a_refused_write_or_bad_credentials_are_not_an_objects_fault(
    store: S3Store, status: int, code: str, error: type[Exception]
) -> None:
    store.client.meta.events.register(
        "before-send.s3", Injector(lambda r: error_response(r, status, code), times=99)
    )
    with pytest.raises(error) as info:
        store.put_new("federations/f1/state.json", b"{}")
    assert not isinstance(info.value, ObjectUnreadableError)
    if code == "ExpiredToken":  # on a read too: the caller's credentials, not the object
        with pytest.raises(StoreCredentialsError) as read_info:
            store.get(KEY)
        assert not isinstance(read_info.value, ObjectUnreadableError)


def test_iam_denying_one_hospitals_objects_is_unreadable_for_those_alone(
    server_bucket: str, moto_server: str
) -> None:
    """A real 403 from moto's IAM enforcement, not an injected one."""
    S3Store(server_bucket, endpoint_url=moto_server, region=REGION).put_new(KEY, b"x")
    other = KEY.replace("site-b", "site-a")
    S3Store(server_bucket, endpoint_url=moto_server, region=REGION).put_new(other, b"y")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            *ALLOW_EVERYTHING["Statement"],
            {
                "Effect": "Deny",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{server_bucket}/*/updates/site-b.*",
            },
        ],
    }
    credentials = create_user_key(moto_server, "123456789012", "aggregator", policy=policy)
    reader = S3Store(server_bucket, client=credentials.client(moto_server))
    enforce_iam(moto_server)
    try:
        with pytest.raises(ObjectAccessDeniedError):
            reader.get(KEY)
        assert reader.get(other) == b"y"
    finally:
        stop_enforcing_iam(moto_server)


def test_a_local_folder_where_a_file_belongs_is_unreadable(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    store.put_new(f"{KEY}/inside", b"x")
    with pytest.raises(ObjectUnreadableError):
        store.get(KEY)
    with pytest.raises(ObjectUnreadableError):
        store.get_head(KEY, 10)
    with pytest.raises(ObjectNotFoundError):
        store.get(KEY.replace("site-b", "site-c"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_a_local_file_without_read_permission_is_unreadable(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    store.put_new(KEY, b"x")
    (tmp_path / KEY).chmod(0)
    try:
        with pytest.raises(ObjectUnreadableError):
            store.get(KEY)
    finally:
        (tmp_path / KEY).chmod(0o644)
