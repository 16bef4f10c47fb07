"""The object store interface that the exchange protocol runs on.

The protocol code never branches on which store it talks to: a local directory for simulation
and tests, S3 (real or moto_server) in production. Each store gives the same two guarantees the
round relies on: write-once keys (``put_new``), and compare-and-swap replacement
(``replace`` with the etag last read) for ``state.json``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

from fl_core.errors import ObjectTooLargeError
from fl_core.types import ETag, ObjectKey, Sha256Hex


class ObjectStore(ABC):
    """Bytes by key, with write-once and compare-and-swap semantics."""

    vouches_for_updates: bool = False
    """Whether ``get_verified`` hands back a digest with every update (S3's stored checksum),
    so that admitting an update does not hash it."""
    poll_backoff_cap_s: float = 2.0
    """Longest pause between a poller's reads: each read of S3 is a billed request, and
    hundreds of hospitals poll at once; a local store can afford to look more often."""

    @abstractmethod
    def put_new(self, key: ObjectKey, data: bytes, retain_until: datetime | None = None) -> None:
        """Write ``key`` once; raise ``ObjectExistsError`` if it already exists.

        ``retain_until`` (timezone-aware) asks the store to keep this version unaltered and
        undeletable until then, by anyone, the writer included: the federation's history
        (ledger entries, round results, global models) is written so, because the account
        that writes it is the one it must hold against. S3 does it with Object Lock in
        COMPLIANCE mode; a local folder can only make the file read-only.
        """

    @abstractmethod
    def get(self, key: ObjectKey) -> bytes:
        """Read ``key``; raise ``ObjectNotFoundError`` if absent."""

    def put_update(self, key: ObjectKey, data: bytes, sha256: Sha256Hex) -> None:
        """``put_new`` for a hospital's training answer, whose ``sha256`` its writer computed.

        S3 is sent that digest as the object's checksum, verifies the bytes against it on
        arrival and keeps it (``get_verified`` hands it to the aggregator); a local folder
        keeps nothing of it, and its reader hashes the file.
        """
        self.put_new(key, data)

    def get_verified(
        self, key: ObjectKey, max_bytes: int | None = None
    ) -> tuple[bytes, Sha256Hex | None]:
        """``get``, and the sha256 of those bytes where the store vouches for it unhashed.

        ``max_bytes``: raise ``ObjectTooLargeError`` for a larger object before reading it,
        from the size the read itself learns first (S3's GET headers, the open file's
        ``fstat``), so that a hospital's answer costs one request, not a HEAD and a GET.

        S3 verified an update's SHA-256 checksum when it was written and keeps it with the
        object: that checksum is the update's digest, and the bytes are not hashed again.
        None where nothing vouches for the bytes (a local file: the caller hashes them).
        Raises ``ChecksumMissingError`` (S3) where the object carries no such checksum.
        """
        return (self.get(key) if max_bytes is None else self.get_bounded(key, max_bytes)), None

    def get_bounded(self, key: ObjectKey, max_bytes: int) -> bytes:
        """``get``, refusing an object over ``max_bytes`` with ``ObjectTooLargeError`` (its
        size attached) before its body is read.

        For a hospital's small documents (a moments report, an answer's manifest), read by
        the hundred: a store that learns the size from the read itself (S3's GET headers,
        the open file's ``fstat``) overrides this, so that each costs one request, not a
        HEAD and a GET. This fallback, for stores that cannot, asks for the size first.
        """
        size = self.size(key)
        if size > max_bytes:
            raise ObjectTooLargeError(f"{key} is {size} bytes, limit {max_bytes}", size)
        return self.get(key)

    @abstractmethod
    def get_head(self, key: ObjectKey, length: int) -> bytes:
        """The first ``length`` bytes of ``key`` (all of it if shorter), unverified.

        For reading a file's header without downloading its body (a training answer's
        manifest, for ``fedsilo status``); whoever needs the object itself reads it with
        ``get``, which verifies it. A ranged read: never the whole object.
        """

    @abstractmethod
    def get_with_etag(self, key: ObjectKey) -> tuple[bytes, ETag]:
        """Read ``key`` and the etag to pass to ``replace``."""

    @abstractmethod
    def replace(self, key: ObjectKey, data: bytes, if_match: ETag | None) -> ETag:
        """Replace ``key`` only if its etag is ``if_match`` (or create it if ``if_match`` is None).

        Raises ``PreconditionFailedError`` when another writer got there first.
        """

    @abstractmethod
    def size(self, key: ObjectKey) -> int:
        """Size of ``key`` in bytes, read without downloading it (admission checks it first)."""

    @abstractmethod
    def exists(self, key: ObjectKey) -> bool:
        """Whether ``key`` exists."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[ObjectKey]:
        """Every key under ``prefix``, sorted."""

    @abstractmethod
    def list_versions(self, prefix: str) -> dict[ObjectKey, str]:
        """Every key under ``prefix`` with a token that changes whenever it is written.

        S3 gives its ETags in the same LIST request, so a reader that polls many small
        objects (the registry, at every admission) re-reads only those that changed.
        """

    def count_versions(self, prefix: str) -> dict[ObjectKey, int] | None:
        """How many times each key under ``prefix`` was written or deleted (S3 versions and
        delete markers): a write-once key with more than one was rewritten.

        None where the store keeps no versions (a local folder: an overwrite leaves no trace).
        Raises ``AccessDeniedError`` where the caller may not list versions (a hospital).
        """
        return None

    @abstractmethod
    def describe(self) -> str:
        """Where this store points, for messages (never credentials)."""
