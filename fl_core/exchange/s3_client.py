"""The S3 client factory, and what its faults mean.

``build_client`` makes the boto3 client every S3 store uses: botocore's retries and timeouts,
the endpoint (AWS, or an S3-compatible server on loopback), the region, and the credentials
(the default chain, or a role assumed with STS and refreshed before it expires).
``translate_error`` turns what that client raises into the one-line ``ExchangeError`` a user can
act on, naming the bucket, role, KMS key or endpoint to check and never echoing credentials or
a presigned URL.

Apart from the store (``s3_store``), which holds what is written where and how it is verified:
this module knows AWS's sessions and error codes, not fedsilo's objects.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, DeferredRefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from fl_core.errors import (
    BucketNotFoundError,
    ConfigError,
    EndpointUnreachableError,
    ExchangeError,
    KmsKeyError,
    ObjectAccessDeniedError,
    ObjectIntegrityError,
    ObjectUnreadableError,
    StoreAccessDeniedError,
    StoreCredentialsError,
    UnreadableKmsObjectError,
)
from fl_core.types import ObjectKey

S3Client = Any
"""boto3 clients are generated at run time and carry no static type."""

NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
CONFLICT_CODES = frozenset({"ConditionalRequestConflict", "409"})
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "403", "AllAccessDisabled"})
_SSE_C_CODES = frozenset({"InvalidRequest", "400"})
"""A GET of an SSE-C object without its key: 400 InvalidRequest; a HEAD: a bare 400."""
_READ_ACTIONS = frozenset({"read", "look up"})
"""The ``translate_error`` actions of GET and HEAD (an object refused to us, not a store we
cannot use)."""
_CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "RequestExpired",
    }
)


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint_url(endpoint_url: str, *, allow_insecure_http: bool) -> str:
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"endpoint URL {redact_url(endpoint_url)!r} is invalid; use https://host[:port] "
            "(or http://127.0.0.1:PORT for a local moto_server)"
        )
    if parts.username or parts.password:
        raise ConfigError("endpoint URL must not carry credentials; use the AWS credential chain")
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_insecure_http:
        raise ConfigError(
            f"endpoint URL {endpoint_url!r} is plain http to a remote host; the exchange is "
            "TLS only: use https (plain http is accepted for 127.0.0.1 / localhost only)"
        )
    return endpoint_url


def redact_url(url: str) -> str:
    """Drop user info and query (presigned signatures live there) before printing a URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _AssumeRoleProvider(CredentialProvider):  # type: ignore[misc]
    """Credentials of ``role_arn``, assumed with the default chain and refreshed before expiry.

    A hospital's ECS task role assumes the federation role named in its config; botocore's
    ``DeferredRefreshableCredentials`` calls STS again shortly before the session expires, so a
    task that runs for days keeps working.
    """

    METHOD = "fedsilo-assume-role"
    CANONICAL_NAME = "fedsilo-assume-role"

    def __init__(self, refresh: Callable[[], dict[str, str]]) -> None:
        super().__init__()
        self._refresh = refresh

    def load(self) -> DeferredRefreshableCredentials:
        return DeferredRefreshableCredentials(refresh_using=self._refresh, method=self.METHOD)


def _assume_role_refresher(
    sts: S3Client, role_arn: str, external_id: str | None, session_name: str
) -> Callable[[], dict[str, str]]:
    def refresh() -> dict[str, str]:
        kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name}
        if external_id is not None:
            kwargs["ExternalId"] = external_id
        creds = sts.assume_role(**kwargs)["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    return refresh


def build_client(
    *,
    endpoint_url: str | None,
    region: str | None,
    role_arn: str | None,
    external_id: str | None,
    session_name: str,
    retry_mode: Literal["standard", "adaptive"],
    max_attempts: int,
    connect_timeout_s: float,
    read_timeout_s: float,
    max_pool_connections: int,
) -> S3Client:
    """An S3 client with botocore's retries and timeouts, optionally as an assumed role.

    No request is made here: a missing bucket or bad credentials surface on first use, mapped
    to one-line errors by ``translate_error``.
    """
    config = Config(
        retries={"mode": retry_mode, "max_attempts": max_attempts},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=max_pool_connections,
        # S3-compatible servers (moto_server, MinIO) rarely resolve bucket subdomains.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_supported",
    )
    core = botocore.session.get_session()
    if role_arn is not None:
        if not role_arn.startswith("arn:"):
            raise ConfigError(
                f"role ARN {role_arn!r} is invalid; use arn:aws:iam::ACCOUNT:role/NAME"
            )
        source = boto3.Session(region_name=region)
        # S3-compatible servers (moto_server, MinIO) answer STS on the same endpoint.
        sts = source.client("sts", endpoint_url=endpoint_url, region_name=region, config=config)
        refresh = _assume_role_refresher(sts, role_arn, external_id, session_name)
        resolver = core.get_component("credential_provider")
        resolver.insert_before("env", _AssumeRoleProvider(refresh))
    session = boto3.Session(botocore_session=core, region_name=region)
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


@dataclass(frozen=True)
class StoreWhereabouts:
    """What an error message names so that its reader knows what to check."""

    where: str
    """The store as ``S3Store.describe`` gives it (bucket, prefix, redacted endpoint)."""
    bucket: str
    endpoint_url: str | None
    role_arn: str | None
    kms_key_id: str | None


def translate_error(
    err: Exception, action: str, key: ObjectKey | None, store: StoreWhereabouts
) -> Exception | None:
    """The one-line ``ExchangeError`` for ``err``, raised by the caller ``from err``; None for
    an error that is not the client's (the caller raises it as it is).

    Never echoes credentials or URLs.
    """
    what = f"{action} {key} in {store.where}" if key else f"{action} {store.where}"
    if isinstance(err, ClientError):
        return _client_error(err, action, what, store)
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return StoreCredentialsError(
            f"cannot {what}: no AWS credentials found; run with a task role, AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(err, CredentialRetrievalError):
        return StoreCredentialsError(
            f"cannot {what}: AWS credentials could not be loaded; check the task role or "
            "the configured profile"
        )
    if isinstance(err, BotoConnectionError | ReadTimeoutError | ConnectionClosedError):
        endpoint = redact_url(store.endpoint_url) if store.endpoint_url else "AWS S3"
        return EndpointUnreachableError(
            f"cannot {what}: endpoint {endpoint} did not answer after retries "
            f"({type(err).__name__}); check the endpoint URL, network and proxy"
        )
    if isinstance(err, FlexibleChecksumError):
        return ObjectIntegrityError(
            f"{key} in {store.where} failed S3's SHA-256 check on download; the object "
            "is corrupt or was altered"
        )
    if isinstance(err, BotoCoreError):
        return ExchangeError(f"cannot {what}: {type(err).__name__}")
    return None


def _client_error(
    err: ClientError, action: str, what: str, store: StoreWhereabouts
) -> ExchangeError:
    code = error_code(err)
    if err.operation_name == "AssumeRole":
        return StoreCredentialsError(
            f"cannot assume role {store.role_arn} ({code}) to {what}; check the role's "
            "trust policy names this account and the external id matches"
        )
    if code == "NoSuchBucket":
        return missing_bucket(store.bucket)
    message = str(err.response.get("Error", {}).get("Message", ""))
    if action in _READ_ACTIONS and code not in _CREDENTIAL_CODES:
        refusal = _read_refusal(code, message, what, store.kms_key_id)
        if refusal is not None:
            return refusal
    if code.startswith("KMS.") or "kms" in message.lower():
        return KmsKeyError(
            f"cannot {what}: KMS refused ({code}); check the KMS key id "
            f"{store.kms_key_id!r} exists in the bucket's region and the key policy "
            "grants this role encrypt/decrypt"
        )
    if code in _CREDENTIAL_CODES:
        return StoreCredentialsError(
            f"cannot {what}: credentials rejected ({code}); refresh or fix the AWS "
            "credentials (task role, AWS_PROFILE, or the assumed role)"
        )
    if code in ACCESS_DENIED_CODES:
        return StoreAccessDeniedError(
            f"cannot {what}: access denied ({code}); check the IAM role policy and the "
            "bucket policy grant this action on this prefix"
        )
    return ExchangeError(f"cannot {what}: S3 error {code or 'unknown'}")


def missing_bucket(bucket: str) -> BucketNotFoundError:
    return BucketNotFoundError(
        f"bucket {bucket!r} does not exist; check the exchange URI, the region and the endpoint URL"
    )


def _read_refusal(
    code: str, message: str, what: str, kms_key_id: str | None
) -> ObjectUnreadableError | None:
    """The error for a GET or HEAD that S3 refused for the object's sake, if it was one.

    S3 answers a read of an object written with a customer-provided key (SSE-C) with 400
    InvalidRequest (a bare 400 to HEAD), one under a KMS key the caller may not use with
    403 AccessDenied naming KMS or a ``KMS.*`` code, an archived one with 403
    InvalidObjectState. A hospital can put its own answer in any of these states, so the
    aggregator must be able to tell them from a store it cannot use at all: they are
    ``ObjectUnreadableError`` (a 403 AccessDenied also an ``AccessDeniedError``, which a
    hospital polling for a key it may not list takes for "not yet").
    """
    if code.startswith("KMS.") or "kms" in message.lower():
        return UnreadableKmsObjectError(
            f"cannot {what}: KMS refused ({code}); the object is encrypted under a KMS key "
            "this role may not use: a hospital must write with the exchange's key "
            f"(exchange.kms_key_id {kms_key_id!r}), else grant this role kms:Decrypt"
        )
    if code in _SSE_C_CODES:
        return ObjectUnreadableError(
            f"cannot {what}: S3 refused the read ({code}); the object was written with a "
            "customer-provided encryption key (SSE-C), which only its writer holds"
        )
    if code == "InvalidObjectState":
        return ObjectUnreadableError(
            f"cannot {what}: the object is archived (InvalidObjectState); restore it first"
        )
    if code in ACCESS_DENIED_CODES:
        return ObjectAccessDeniedError(
            f"cannot {what}: access denied ({code}); check the IAM role policy and the "
            "bucket policy grant this action on this prefix"
        )
    return None
