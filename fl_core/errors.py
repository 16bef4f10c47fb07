"""Every expected fault is a ``FedsiloError`` whose ``exit_code`` the entrypoints return.

Messages say what failed, for which site and round, and what to do next, so that the CLI can
print one line instead of a traceback.
"""

from __future__ import annotations


class FedsiloError(Exception):
    """Base of every expected fault."""

    exit_code = 1


class ConfigError(FedsiloError, ValueError):
    """Bad input or config: the message names the field and the fix."""

    exit_code = 2


class CodecError(FedsiloError, ValueError):
    """Bytes that are not a safetensors file of plain tensors."""

    exit_code = 2


class HeaderError(CodecError):
    """A safetensors header that is not one: not JSON, nested too deep, a repeated key, a
    shape or offset that is not a plain integer in range, metadata that is not text.

    Apart from ``CodecError`` (a file whose header and size disagree: truncated, or not
    safetensors at all) so admission can name the header as what was malformed.
    """


class UpdateRejectedError(FedsiloError, ValueError):
    """An update that failed admission; ``reason`` is a short stable code for result.json."""

    exit_code = 2

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class AggregationError(FedsiloError):
    exit_code = 3


class NonFiniteUpdateError(AggregationError):
    """An update held NaN or Inf (or overflowed when weighted), found while it was added.

    Part of it is in the sum: the mean is void, and must be begun again with the updates
    accepted before it.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} holds NaN or Inf")
        self.tensor = name


class ExchangeError(FedsiloError):
    """The exchange store failed (I/O, permissions, service)."""

    exit_code = 4


class ObjectNotFoundError(ExchangeError, KeyError):
    """The key does not exist in the store."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "object not found"


class ObjectExistsError(ExchangeError):
    """A write-once key was already written (``IfNoneMatch="*"`` failed)."""


class PreconditionFailedError(ExchangeError):
    """A conditional replace lost the race (``IfMatch`` etag no longer current)."""


class ObjectIntegrityError(ExchangeError):
    """The bytes read back do not match the checksum written with them (corrupt or tampered).

    Kept apart from ``ExchangeError`` so that admission can reject such an update and go on,
    while an unreachable store still stops the round.
    """


class ObjectTooLargeError(ExchangeError):
    """The object is larger than the reader allows; found from its size, before its bytes
    were read."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class ChecksumMissingError(ObjectIntegrityError):
    """The object has no full-object SHA-256 checksum that S3 verified on arrival (written
    without ``ChecksumAlgorithm="SHA256"``, or as a multipart upload, whose SHA-256 is a
    checksum of part checksums): nothing vouches for its bytes, so it is not used."""


class AccessDeniedError(ExchangeError):
    """The credentials work but IAM or the bucket policy refuses this action.

    S3 also answers a GET of a key that does not exist yet with 403 when the caller may not
    list the bucket (hospitals may not), so pollers treat it as "not yet" until they give up.
    """


class FederationLockedError(FedsiloError):
    """Another aggregator holds the federation's lease."""

    exit_code = 5


class RoundFailedError(FedsiloError):
    """A round closed below quorum under the ``fail`` policy."""

    exit_code = 6


class ObjectUnreadableError(ExchangeError):
    """The object is there but the store will not give this caller its bytes: written with a
    customer-provided key (SSE-C) or under a KMS key this caller may not use, archived, or
    refused to this caller.

    For a hospital's answer that is the hospital's doing: the aggregator rejects the answer
    (``unreadable``) and the round goes on. Anywhere else it stops like any ``ExchangeError``.
    """


class ObjectAccessDeniedError(AccessDeniedError, ObjectUnreadableError):
    """A read refused with 403 AccessDenied.

    Both at once: a hospital's poller takes it for "not written yet" (``AccessDeniedError``:
    S3's answer for a key the caller may not list), the aggregator reading a hospital's
    answer for an unreadable one.
    """


class BucketNotFoundError(ExchangeError):
    """The exchange bucket does not exist (or not where the client looks for it)."""


class KmsKeyError(ExchangeError):
    """S3 could not use the configured KMS key (wrong id, disabled, or no grant)."""


class UnreadableKmsObjectError(KmsKeyError, ObjectUnreadableError):
    """An object encrypted under a KMS key this role may not use: unreadable, by KMS."""


class StoreCredentialsError(ExchangeError):
    """No usable AWS credentials: missing, expired, invalid, or the role could not be assumed."""


StoreAccessDeniedError = AccessDeniedError
"""The name the S3 store's callers know a refused action by."""


class EndpointUnreachableError(ExchangeError):
    """The S3 endpoint did not answer after botocore's retries."""


class LedgerVerificationError(FedsiloError):
    """The exchange no longer matches its ledger: something was altered, removed or reordered."""

    exit_code = 8


class SiteCheckError(FedsiloError):
    """The data does not fit the federation: the message names what, the report says more."""

    exit_code = 1


class SecAggRefusedError(FedsiloError):
    """A hospital refuses a secure aggregation document that would let it be unmasked."""

    exit_code = 2
