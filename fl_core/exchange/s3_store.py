"""The S3 object store: the exchange bucket of the coordinating account, or an S3-compatible server.

The same two guarantees as ``LocalDirectoryStore`` come from S3 conditional writes:
``put_new`` sends ``IfNoneMatch="*"`` (on ``PutObject`` or on ``CompleteMultipartUpload``), and
``replace`` sends ``IfMatch=<etag>`` (or ``IfNoneMatch="*"`` to create). S3 evaluates the
condition atomically, so two aggregators can never both advance ``state.json``.

Integrity: SHA-256 is computed once, by the writer, and verified by S3.

- S3's own SHA-256 checksum (``ChecksumAlgorithm="SHA256"``) is sent with every PUT and part,
  so S3 refuses bytes that do not hash to it, and keeps it with the object. The same digest
  travels as user metadata (``x-amz-meta-sha256``): the writer's claim, and how a retried write
  recognises its own object.
- A hospital's training answer (``put_update``) is always one PutObject, because S3 keeps a
  SHA-256 of the whole object only for those (a multipart upload's SHA-256 is a checksum of
  part checksums; S3 has no full-object SHA-256 for multipart uploads). The aggregator reads it
  with ``get_verified``: the checksum S3 stored arrives with the object in the same GET and is
  the update's digest; the bytes are not hashed again (TLS protects the transfer, and botocore's
  own response hashing is turned off for that GET). An update without a full-object checksum
  is refused (``ChecksumMissingError``), one whose checksum differs from its writer's claim too.
- Every other read (``get``) hashes the bytes against ``x-amz-meta-sha256``: those objects are
  small, or the aggregator's own, or large but multipart (a global model), where S3's
  checksum-of-checksums cannot stand for the object's SHA-256.

Retries on throttling (503 SlowDown), 5xx and dropped connections are botocore's own
(``Config(retries=...)``). Two cases botocore cannot know about are handled here: a write whose
first attempt landed but whose reply was lost (the retry then fails its condition: it is
recognised by its checksum and counted as done), and a body read cut off mid-stream (the GET
is repeated).

The client itself (session, endpoint, retries, credentials, region) and the meaning of its
errors live in ``s3_client``; with this module, the only ones of ``fl_core`` that import boto3
or botocore.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from fl_core.errors import (
    ChecksumMissingError,
    ConfigError,
    EndpointUnreachableError,
    ExchangeError,
    ObjectExistsError,
    ObjectIntegrityError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PreconditionFailedError,
)
from fl_core.exchange.s3_client import (
    CONFLICT_CODES,
    NOT_FOUND_CODES,
    PRECONDITION_CODES,
    S3Client,
    StoreWhereabouts,
    build_client,
    check_endpoint_url,
    error_code,
    missing_bucket,
    redact_url,
    translate_error,
)
from fl_core.exchange.store import ObjectStore
from fl_core.hashing import digest_b64, sha256_b64, sha256_hex
from fl_core.types import ETag, ObjectKey, Sha256Hex

log = structlog.get_logger("fedsilo.exchange")

MiB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD_BYTES = 256 * MiB
DEFAULT_RANGED_DOWNLOAD_THRESHOLD_BYTES = 256 * MiB
DEFAULT_PART_SIZE_BYTES = 16 * MiB
MIN_PART_SIZE_BYTES = 5 * MiB  # S3's floor for every part but the last
MAX_SINGLE_PUT_BYTES = 5 * 1024 * MiB  # S3's ceiling for one PutObject

SHA256_METADATA_KEY = "sha256"
_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONFLICT_ATTEMPTS = 3  # 409 ConditionalRequestConflict: AWS says retry the write
_CONFLICT_BACKOFF_S = 0.2
_BODY_READ_ATTEMPTS = 3  # a GET whose body is cut off mid-stream is repeated this often

_BODY_READ_ERRORS = (
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    ConnectionClosedError,
)


class _BodyCutError(Exception):
    """A GET's headers arrived but its body was cut off; the whole GET is worth repeating.

    Kept apart from the same botocore errors raised while sending the request, which botocore
    has already retried. Private to this module, not in ``fl_core.errors``: it never leaves
    ``_get``, which repeats the GET or turns it into ``EndpointUnreachableError``.
    """


def _read_body(response: dict[str, Any], expected_bytes: int, *, whole: bool = True) -> bytes:
    """Read ``expected_bytes`` of a GET's body (all of it unless ``whole`` is False)."""
    try:
        data: bytes = response["Body"].read() if whole else response["Body"].read(expected_bytes)
    except _BODY_READ_ERRORS as err:
        raise _BodyCutError(type(err).__name__) from err
    if len(data) != expected_bytes:
        raise _BodyCutError(f"read {len(data)} of {expected_bytes} bytes")
    return data


def _lacks_object_lock(err: ClientError) -> bool:
    """S3's answer to a retained write into a bucket created without Object Lock."""
    message = str(err.response.get("Error", {}).get("Message", "")).lower().replace(" ", "")
    return error_code(err) == "InvalidRequest" and "objectlockconfiguration" in message


def _retry_attempts(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("RetryAttempts", 0))


_UNHASHED_GETS = threading.local()
"""Set while this thread reads an update whose digest is the checksum S3 stored."""


def _skip_response_hash(context: dict[str, Any], **_: Any) -> None:
    """botocore hashes a GET's body whenever S3 sends a checksum; for ``get_verified`` that
    is the hash this store exists to avoid (S3 verified the bytes on arrival, TLS in transit)."""
    if getattr(_UNHASHED_GETS, "on", False):
        context.get("checksum", {}).pop("response_algorithms", None)


def stored_sha256(key: ObjectKey, where: str, response: dict[str, Any]) -> Sha256Hex:
    """The full-object SHA-256 that S3 verified when ``key`` was written, as hex.

    Refuses an object without one (no ``ChecksumSHA256``, or a multipart upload's
    checksum of part checksums, ``<base64>-<parts>``), and one whose checksum is not its
    writer's claim (``x-amz-meta-sha256``).
    """
    checksum = response.get("ChecksumSHA256")
    if not checksum or "-" in checksum or response.get("ChecksumType") == "COMPOSITE":
        raise ChecksumMissingError(
            f"{key} in {where} has no full-object SHA-256 checksum stored by S3 (written "
            "without ChecksumAlgorithm=SHA256, or as a multipart upload); its writer must "
            "upload it again with fedsilo, in one PutObject"
        )
    try:
        raw = base64.b64decode(checksum, validate=True)
    except ValueError as err:
        raise ChecksumMissingError(f"{key} in {where} has a malformed SHA-256 checksum") from err
    if len(raw) != hashlib.sha256().digest_size:
        raise ChecksumMissingError(f"{key} in {where} has a malformed SHA-256 checksum")
    digest = raw.hex()
    claim = response.get("Metadata", {}).get(SHA256_METADATA_KEY)
    if claim != digest:
        raise ObjectIntegrityError(
            f"{key} in {where} has S3 checksum {digest[:12]}… but its writer claimed "
            f"{str(claim)[:12]}…; the object was not written by fedsilo or was altered"
        )
    return digest


def normalise_prefix(prefix: str) -> str:
    """``"a/b"`` or ``"/a/b/"`` to ``"a/b/"``; ``""`` stays ``""`` (the bucket root)."""
    stripped = prefix.strip("/")
    if ".." in stripped.split("/"):
        raise ConfigError(f"S3 prefix {prefix!r} contains '..'; give a plain path")
    return f"{stripped}/" if stripped else ""


def check_bucket_name(bucket: str) -> str:
    if not _BUCKET_PATTERN.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(
            f"S3 bucket name {bucket!r} is invalid; use 3-63 lower-case letters, digits, "
            "dots or dashes (e.g. s3://fedsilo-exchange/federations)"
        )
    return bucket


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix``; keys passed to methods are relative to the prefix.

    Parameters
    ----------
    bucket, prefix
        Where the exchange lives; ``federations/f1/state.json`` maps to
        ``s3://bucket/{prefix}/federations/f1/state.json``.
    client
        A ready boto3 S3 client (tests); otherwise one is built from the other arguments.
    endpoint_url
        An S3-compatible server (moto_server, MinIO). Plain http is refused except on loopback
        unless ``allow_insecure_http``: the exchange is TLS only.
    kms_key_id
        The federation's customer managed key; every write asks for SSE-KMS with it. When
        None, no encryption header is sent and the bucket's default encryption applies (never
        the ``aws/s3`` managed key, which another account could not decrypt).
    role_arn, external_id, session_name
        Assume this role (STS) before touching the bucket; otherwise the default credential
        chain (the ECS task role) is used as is.
    multipart_threshold_bytes, part_size_bytes, max_concurrency
        Objects above the threshold are written as a multipart upload, ``part_size_bytes`` at
        a time, ``max_concurrency`` in flight.
    ranged_download_threshold_bytes
        Objects above it are read with parallel ranged GETs; below it, one streamed GET, the
        quicker for model-sized objects: parallel ranges only pay off where one connection
        cannot fill the link. ``python -m bench --only s3_bench`` times a model's round trip
        against raw boto3 (``docs/performance.md``).
    retry_mode, max_attempts, connect_timeout_s, read_timeout_s
        botocore's retry and timeout settings.
    """

    vouches_for_updates = True  # get_verified returns S3's verified full-object checksum

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: S3Client | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        kms_key_id: str | None = None,
        role_arn: str | None = None,
        external_id: str | None = None,
        session_name: str = "fedsilo",
        allow_insecure_http: bool = False,
        multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES,
        part_size_bytes: int = DEFAULT_PART_SIZE_BYTES,
        max_concurrency: int = 4,
        ranged_download_threshold_bytes: int = DEFAULT_RANGED_DOWNLOAD_THRESHOLD_BYTES,
        retry_mode: Literal["standard", "adaptive"] = "standard",
        max_attempts: int = 8,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        self.bucket = check_bucket_name(bucket)
        self.prefix = normalise_prefix(prefix)
        if endpoint_url is not None:
            check_endpoint_url(endpoint_url, allow_insecure_http=allow_insecure_http)
        if external_id is not None and role_arn is None:
            raise ConfigError("external_id is set but role_arn is not; set both or neither")
        if part_size_bytes < 1 or multipart_threshold_bytes < part_size_bytes:
            raise ConfigError(
                f"multipart_threshold_bytes {multipart_threshold_bytes} must be >= "
                f"part_size_bytes {part_size_bytes} >= 1"
            )
        if max_attempts < 1 or max_concurrency < 1:
            raise ConfigError("max_attempts and max_concurrency must be >= 1")
        self._endpoint_url = endpoint_url
        self._kms_key_id = kms_key_id
        self._role_arn = role_arn
        self._multipart_threshold = multipart_threshold_bytes
        self._ranged_threshold = max(ranged_download_threshold_bytes, part_size_bytes)
        self._part_size = part_size_bytes
        self._max_concurrency = max_concurrency
        self._bucket_confirmed = False
        self._object_lock = True
        """False once the bucket answered that it has no Object Lock configuration."""
        self.client: S3Client = (
            client
            if client is not None
            else build_client(
                endpoint_url=endpoint_url,
                region=region,
                role_arn=role_arn,
                external_id=external_id,
                session_name=session_name,
                retry_mode=retry_mode,
                max_attempts=max_attempts,
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                max_pool_connections=max(10, 2 * max_concurrency),
            )
        )

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> S3Store:
        """``s3://bucket/prefix`` to a store; ``kwargs`` go to the constructor."""
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"S3 URI {uri!r} is invalid; use s3://bucket/prefix")
        return cls(parts.netloc, parts.path, **kwargs)

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        if self._endpoint_url is not None:
            where += f" at {redact_url(self._endpoint_url)}"
        return where

    # ------------------------------------------------------------------ keys

    def _s3_key(self, key: ObjectKey) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ExchangeError(f"invalid object key {key!r}")
        return f"{self.prefix}{key}"

    def _retention_args(self, retain_until: datetime | None) -> dict[str, Any]:
        """Object Lock in COMPLIANCE mode: no one, the bucket's own account included, can
        delete the version or shorten its retention before ``retain_until``."""
        if retain_until is None or not self._object_lock:
            return {}
        return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": retain_until}

    def _encryption_args(self) -> dict[str, str]:
        if self._kms_key_id is None:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._kms_key_id}

    # ---------------------------------------------------------------- errors

    def _raise(self, err: Exception, action: str, key: ObjectKey | None) -> NoReturn:
        """Raise the one-line ``ExchangeError`` for ``err`` (``s3_client.translate_error``)."""
        translated = translate_error(err, action, key, self._whereabouts())
        if translated is None:
            raise err
        raise translated from err

    def _whereabouts(self) -> StoreWhereabouts:
        return StoreWhereabouts(
            where=self.describe(),
            bucket=self.bucket,
            endpoint_url=self._endpoint_url,
            role_arn=self._role_arn,
            kms_key_id=self._kms_key_id,
        )

    @contextmanager
    def _mapped(self, action: str, key: ObjectKey | None) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as err:
            self._raise(err, action, key)

    def _confirm_bucket(self) -> None:
        """HEAD answers a bare 404 for a missing bucket and a missing key alike: tell them apart.

        Called only on a 404, once per store: a 403 here (no ListBucket) means the bucket exists.
        """
        if self._bucket_confirmed:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            if error_code(err) in ("404", "NoSuchBucket", "NotFound"):
                raise missing_bucket(self.bucket) from err
            if error_code(err) not in ("403", "AccessDenied"):
                self._raise(err, "check bucket of", None)
        except BotoCoreError as err:
            self._raise(err, "check bucket of", None)
        self._bucket_confirmed = True

    # ---------------------------------------------------------------- writes

    def put_new(self, key: ObjectKey, data: bytes, retain_until: datetime | None = None) -> None:
        self._write(key, data, if_match=None, replacing=False, retain_until=retain_until)

    def put_update(self, key: ObjectKey, data: bytes, sha256: Sha256Hex) -> None:
        """One PutObject whatever the size, so that S3 keeps the whole object's SHA-256."""
        if len(data) > MAX_SINGLE_PUT_BYTES:
            raise ExchangeError(
                f"{key} is {len(data)} bytes; S3 keeps a full-object SHA-256 only for one "
                "PutObject (<= 5 GiB): shrink the model or the update"
            )
        self._write(key, data, if_match=None, replacing=False, digest=bytes.fromhex(sha256))

    def replace(self, key: ObjectKey, data: bytes, if_match: ETag | None) -> ETag:
        if len(data) > MAX_SINGLE_PUT_BYTES:
            raise ExchangeError(
                f"{key} is {len(data)} bytes; replace is for small control objects (<= 5 GiB)"
            )
        return self._write(key, data, if_match=if_match, replacing=True)

    def _write(
        self,
        key: ObjectKey,
        data: bytes,
        *,
        if_match: ETag | None,
        replacing: bool,
        retain_until: datetime | None = None,
        digest: bytes | None = None,
    ) -> ETag:
        """One conditional write: ``IfMatch`` when an etag is given, else ``IfNoneMatch="*"``.

        ``replace`` always uses one PUT: moto (and older S3-compatible servers) ignore
        ``IfMatch`` on ``CompleteMultipartUpload``, and ``state.json`` is small. So does a
        write whose ``digest`` the caller computed (``put_update``).
        """
        s3_key = self._s3_key(key)
        one_put = replacing or digest is not None or len(data) <= self._multipart_threshold
        if digest is None:
            digest = hashlib.sha256(data).digest()  # once: both S3's checksum and our metadata
        condition = {"IfNoneMatch": "*"} if if_match is None else {"IfMatch": if_match}
        action = "replace" if replacing else "write"
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            retention = self._retention_args(retain_until)
            try:
                if one_put:
                    return self._put_single(s3_key, data, digest, condition, retention)
                return self._put_multipart(s3_key, data, digest, condition, retention)
            except ClientError as err:
                code = error_code(err)
                if retain_until is not None and _lacks_object_lock(err) and self._object_lock:
                    self._object_lock = False  # this bucket never had it: write unretained
                    log.warning("object_lock_missing", bucket=self.bucket, key=key)
                    continue
                if code in CONFLICT_CODES and attempt < _CONFLICT_ATTEMPTS:
                    # 409: a concurrent write to this key was in flight; AWS says retry.
                    time.sleep(_CONFLICT_BACKOFF_S * attempt)
                    continue
                lost = code in PRECONDITION_CODES | CONFLICT_CODES or (
                    if_match is not None and code in NOT_FOUND_CODES
                )
                if not lost:
                    self._raise(err, action, key)
                landed = self._own_write_landed(s3_key, digest, err)
                if landed is not None:
                    return landed
                if not replacing:
                    raise ObjectExistsError(f"{key} already exists in {self.describe()}") from err
                expected = "absent" if if_match is None else f"etag {if_match[:14]}"
                raise PreconditionFailedError(
                    f"{key} changed under us (expected {expected}); another writer advanced it"
                ) from err
            except BotoCoreError as err:
                self._raise(err, action, key)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _own_write_landed(self, s3_key: str, digest: bytes, err: ClientError) -> ETag | None:
        """After a retried write fails its condition, was it our own first attempt that landed?

        botocore retries a PUT whose reply was lost (reset connection, 503 after the write);
        the retry then meets the object its first attempt wrote. Same SHA-256 means the write
        is done, and its etag is returned. Only retried requests are checked, so a genuine
        second writer still gets ``ObjectExistsError``.
        """
        if _retry_attempts(err) == 0:
            return None
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=s3_key)
        except ClientError:
            return None
        if head.get("Metadata", {}).get(SHA256_METADATA_KEY) == digest.hex():
            return str(head["ETag"])
        return None

    def _new_object_args(
        self, s3_key: str, digest: bytes, retention: dict[str, Any]
    ) -> dict[str, Any]:
        """What every object written carries, by one PUT or a multipart upload alike: S3's
        SHA-256 checksum, the digest in metadata that a retried write is recognised by, the
        bucket's encryption and the retention asked for."""
        return {
            "Bucket": self.bucket,
            "Key": s3_key,
            "ChecksumAlgorithm": "SHA256",
            "Metadata": {SHA256_METADATA_KEY: digest.hex()},
            **self._encryption_args(),
            **retention,
        }

    def _put_single(
        self,
        s3_key: str,
        data: bytes,
        digest: bytes,
        condition: dict[str, str],
        retention: dict[str, Any],
    ) -> ETag:
        """One PutObject. Object Lock requires a Content-MD5 or checksum header on a retained
        write: the SHA-256 checksum sent with every write is that header."""
        response = self.client.put_object(
            **self._new_object_args(s3_key, digest, retention),
            Body=data,
            ChecksumSHA256=digest_b64(digest),
            **condition,
        )
        return str(response["ETag"])

    def _put_multipart(
        self,
        s3_key: str,
        data: bytes,
        digest: bytes,
        condition: dict[str, str],
        retention: dict[str, Any],
    ) -> ETag:
        """Parts in parallel, then ``CompleteMultipartUpload`` carries the write condition.

        The condition is checked only at completion, so a loser uploads its parts for nothing;
        that costs bandwidth, never correctness. Any failure aborts the upload so that no
        orphaned parts are billed (the bucket's lifecycle rule is the backstop).
        """
        created = self.client.create_multipart_upload(
            **self._new_object_args(s3_key, digest, retention)
        )
        upload_id = created["UploadId"]
        view = memoryview(data)
        offsets = range(0, len(data), self._part_size)

        def upload_part(number: int, start: int) -> dict[str, Any]:
            chunk = view[start : start + self._part_size]
            checksum = sha256_b64(chunk)
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=s3_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(chunk),
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
            return {
                "PartNumber": number,
                "ETag": response["ETag"],
                "ChecksumSHA256": response.get("ChecksumSHA256") or checksum,
            }

        try:
            with ThreadPoolExecutor(max_workers=self._max_concurrency) as pool:
                futures = [
                    pool.submit(upload_part, number, start)
                    for number, start in enumerate(offsets, start=1)
                ]
                parts = [future.result() for future in futures]
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=s3_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **condition,
            )
        except BaseException:
            self._abort_quietly(s3_key, upload_id)
            raise
        return str(response["ETag"])

    def _abort_quietly(self, s3_key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=s3_key, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            # The original error is the one to report; the lifecycle rule reaps the parts.
            return

    # ----------------------------------------------------------------- reads

    def get(self, key: ObjectKey) -> bytes:
        return self._get(key)[0]

    def get_verified(
        self, key: ObjectKey, max_bytes: int | None = None
    ) -> tuple[bytes, Sha256Hex | None]:
        """The bytes and the SHA-256 S3 verified when they were written: not hashed here.
        One GET: its headers give the size (``max_bytes``) and the checksum before the body."""
        # once per client (botocore keeps one registration per unique_id)
        self.client.meta.events.register(
            "before-call.s3.GetObject", _skip_response_hash, unique_id="fedsilo-unhashed-get"
        )
        _UNHASHED_GETS.on = True
        try:
            data, _etag, digest = self._get(key, trust_checksum=True, max_bytes=max_bytes)
        finally:
            _UNHASHED_GETS.on = False
        return data, digest

    def get_bounded(self, key: ObjectKey, max_bytes: int) -> bytes:
        """One GET: its headers give the size before the body; the bytes are verified
        against their writer's sha256 as ``get`` verifies them."""
        return self._get(key, max_bytes=max_bytes)[0]

    def get_with_etag(self, key: ObjectKey) -> tuple[bytes, ETag]:
        data, etag, _digest = self._get(key)
        return data, etag

    def _get(
        self, key: ObjectKey, trust_checksum: bool = False, max_bytes: int | None = None
    ) -> tuple[bytes, ETag, Sha256Hex]:
        """The object, its etag and its sha256: S3's stored checksum where ``trust_checksum``,
        else the bytes hashed against their writer's claim."""
        s3_key = self._s3_key(key)
        for attempt in range(1, _BODY_READ_ATTEMPTS + 1):
            try:
                return self._download(key, s3_key, trust_checksum, max_bytes)
            except _BodyCutError as err:
                if attempt == _BODY_READ_ATTEMPTS:
                    raise EndpointUnreachableError(
                        f"cannot read {key} in {self.describe()}: the connection dropped "
                        f"mid-body {attempt} times ({err}); check the network"
                    ) from err
            except ClientError as err:
                code = error_code(err)
                if code in NOT_FOUND_CODES:
                    raise ObjectNotFoundError(f"{key} not found in {self.describe()}") from err
                if code in PRECONDITION_CODES:
                    # Replaced between the first GET and a ranged GET: read it again.
                    if attempt < _BODY_READ_ATTEMPTS:
                        continue
                    raise PreconditionFailedError(
                        f"{key} kept changing while it was read from {self.describe()}"
                    ) from err
                self._raise(err, "read", key)
            except BotoCoreError as err:
                self._raise(err, "read", key)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def get_head(self, key: ObjectKey, length: int) -> bytes:
        """One ranged GET; no sha256 check (that needs the whole object)."""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._s3_key(key), Range=f"bytes=0-{length - 1}"
            )
            return bytes(response["Body"].read())
        except ClientError as err:
            if error_code(err) in NOT_FOUND_CODES:
                raise ObjectNotFoundError(f"{key} not found in {self.describe()}") from err
            if error_code(err) == "InvalidRange":  # an empty object
                return b""
            self._raise(err, "read", key)
        except BotoCoreError as err:
            self._raise(err, "read", key)
        except _BODY_READ_ERRORS as err:
            raise EndpointUnreachableError(
                f"cannot read {key} in {self.describe()}: the connection dropped ({err})"
            ) from err

    def _download(
        self, key: ObjectKey, s3_key: str, trust_checksum: bool, max_bytes: int | None = None
    ) -> tuple[bytes, ETag, Sha256Hex]:
        response = self.client.get_object(Bucket=self.bucket, Key=s3_key, ChecksumMode="ENABLED")
        etag = str(response["ETag"])
        expected = response.get("Metadata", {}).get(SHA256_METADATA_KEY)
        # before the body: an update S3 does not vouch for is not downloaded
        size = int(response["ContentLength"])
        try:
            if max_bytes is not None and size > max_bytes:
                raise ObjectTooLargeError(f"{key} is {size} bytes, limit {max_bytes}", size)
            stored = stored_sha256(key, self.describe(), response) if trust_checksum else None
        except (ObjectTooLargeError, ObjectIntegrityError):
            response["Body"].close()
            raise
        if size > self._ranged_threshold:
            # Keep the first part of this stream, fetch the rest as parallel ranges.
            first = _read_body(response, self._part_size, whole=False)
            response["Body"].close()
            data = self._download_ranges(s3_key, size, etag, first)
        else:
            data = _read_body(response, size)
        if stored is not None:
            return data, etag, stored
        return data, etag, self._verify(key, data, expected)

    def _download_ranges(self, s3_key: str, size: int, etag: ETag, first: bytes) -> bytes:
        """Parallel ranged GETs pinned to one version with ``IfMatch``: never a torn read."""
        buffer = bytearray(size)
        view = memoryview(buffer)
        view[: len(first)] = first

        def fetch(start: int) -> None:
            end = min(start + self._part_size, size) - 1
            response = self.client.get_object(
                Bucket=self.bucket, Key=s3_key, Range=f"bytes={start}-{end}", IfMatch=etag
            )
            view[start : end + 1] = _read_body(response, end - start + 1)

        with ThreadPoolExecutor(max_workers=self._max_concurrency) as pool:
            starts = range(len(first), size, self._part_size)
            for future in [pool.submit(fetch, start) for start in starts]:
                future.result()
        view.release()
        return bytes(buffer)

    def _verify(self, key: ObjectKey, data: bytes, expected: str | None) -> Sha256Hex:
        """The sha256 of ``data``, which must be the one its writer stored."""
        if expected is None:
            raise ObjectIntegrityError(
                f"{key} in {self.describe()} has no sha256 metadata, so it was not written by "
                "fedsilo; refusing to use it"
            )
        actual = sha256_hex(data)
        if actual != expected:
            raise ObjectIntegrityError(
                f"{key} in {self.describe()} has sha256 {actual[:12]}… but was written with "
                f"{expected[:12]}…; the object is corrupt or was altered"
            )
        return actual

    def size(self, key: ObjectKey) -> int:
        head = self._head(key)
        if head is None:
            raise ObjectNotFoundError(f"{key} not found in {self.describe()}")
        return int(head["ContentLength"])

    def exists(self, key: ObjectKey) -> bool:
        return self._head(key) is not None

    def _head(self, key: ObjectKey) -> dict[str, Any] | None:
        s3_key = self._s3_key(key)
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=s3_key)
        except ClientError as err:
            if error_code(err) in NOT_FOUND_CODES:
                self._confirm_bucket()
                return None
            self._raise(err, "look up", key)
        except BotoCoreError as err:
            self._raise(err, "look up", key)
        self._bucket_confirmed = True
        return head

    def list_keys(self, prefix: str) -> list[ObjectKey]:
        return sorted(self._listing(prefix))

    def list_versions(self, prefix: str) -> dict[ObjectKey, str]:
        return dict(sorted(self._listing(prefix).items()))

    def count_versions(self, prefix: str) -> dict[ObjectKey, int]:
        """ListObjectVersions: versions and delete markers per key (needs ListBucketVersions,
        which the aggregator's role has and a hospital's has not)."""
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise ExchangeError(f"invalid key prefix {prefix!r}")
        counts: dict[ObjectKey, int] = {}
        with self._mapped("list versions of", prefix or "(all keys)"):
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{prefix}"):
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    key = item["Key"][len(self.prefix) :]
                    counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def _listing(self, prefix: str) -> dict[ObjectKey, str]:
        """Keys under ``prefix`` and their ETags, from LIST alone."""
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise ExchangeError(f"invalid key prefix {prefix!r}")
        found: dict[ObjectKey, str] = {}
        with self._mapped("list", prefix or "(all keys)"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{prefix}"):
                for item in page.get("Contents", []):
                    found[item["Key"][len(self.prefix) :]] = str(item["ETag"])
        return found
