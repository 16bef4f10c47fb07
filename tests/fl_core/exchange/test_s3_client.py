"""The S3 client factory's own rules: which endpoints it accepts, what it prints of a URL, and
what each fault of the client means to a user.

The faults as a store meets them, over moto, are in ``test_s3_store``; here ``translate_error``
is given botocore's own exception objects.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from fl_core.errors import (
    BucketNotFoundError,
    ConfigError,
    EndpointUnreachableError,
    ObjectAccessDeniedError,
    StoreAccessDeniedError,
    StoreCredentialsError,
)
from fl_core.exchange.s3_client import (
    StoreWhereabouts,
    check_endpoint_url,
    redact_url,
    translate_error,
)

STORE = StoreWhereabouts(
    where="s3://bucket/prefix/",
    bucket="bucket",
    endpoint_url="https://user:secret@s3.example.org:9000/path?X-Amz-Signature=abc",
    role_arn="arn:aws:iam::111122223333:role/fedsilo-hospital-a",
    kms_key_id="alias/fedsilo/f1/exchange",
)
KEY = "federations/f1/state.json"


def _client_error(code: str, operation: str = "PutObject", message: str = "no") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def test_failed_role_assumption_names_the_role() -> None:
    translated = translate_error(_client_error("AccessDenied", "AssumeRole"), "write", KEY, STORE)
    assert isinstance(translated, StoreCredentialsError)
    assert f"cannot assume role {STORE.role_arn}" in str(translated)


def test_missing_bucket_names_the_bucket() -> None:
    translated = translate_error(_client_error("NoSuchBucket"), "write", KEY, STORE)
    assert isinstance(translated, BucketNotFoundError)
    assert "'bucket' does not exist" in str(translated)


def test_access_denied_is_the_objects_on_a_read_and_the_stores_on_a_write() -> None:
    """A refused read may be a hospital's unreadable answer; a refused write is our policy."""
    read = translate_error(_client_error("AccessDenied", "GetObject"), "read", KEY, STORE)
    write = translate_error(_client_error("AccessDenied"), "write", KEY, STORE)
    assert isinstance(read, ObjectAccessDeniedError)
    assert isinstance(write, StoreAccessDeniedError)
    assert not isinstance(write, ObjectAccessDeniedError)


def test_unreachable_endpoint_is_named_without_its_credentials_or_signature() -> None:
    err = EndpointConnectionError(endpoint_url=STORE.endpoint_url)
    translated = translate_error(err, "read", KEY, STORE)
    assert isinstance(translated, EndpointUnreachableError)
    text = str(translated)
    assert "https://s3.example.org:9000/path" in text
    assert "secret" not in text and "Signature" not in text


def test_missing_credentials_say_where_credentials_come_from() -> None:
    translated = translate_error(NoCredentialsError(), "write", KEY, STORE)
    assert isinstance(translated, StoreCredentialsError)
    assert "AWS_PROFILE" in str(translated)


def test_an_error_that_is_not_the_clients_is_left_to_its_caller() -> None:
    assert translate_error(KeyError("x"), "write", KEY, STORE) is None


def test_redact_url_drops_user_info_and_query() -> None:
    assert redact_url(STORE.endpoint_url or "") == "https://s3.example.org:9000/path"


@pytest.mark.parametrize(
    ("endpoint", "match"),
    [
        ("http://10.0.0.5:9000", "TLS only"),
        ("ftp://127.0.0.1:9000", "is invalid"),
        ("https://user:secret@s3.example.org", "must not carry credentials"),
    ],
)
def test_endpoint_urls_refused(endpoint: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_endpoint_url(endpoint, allow_insecure_http=False)


@pytest.mark.parametrize(
    ("endpoint", "insecure"),
    [
        ("https://s3.eu-west-1.amazonaws.com", False),
        ("http://127.0.0.1:5000", False),
        ("http://localhost:5000", False),
        ("http://10.0.0.5:9000", True),
    ],
)
def test_endpoint_urls_accepted(endpoint: str, insecure: bool) -> None:
    assert check_endpoint_url(endpoint, allow_insecure_http=insecure) == endpoint
