"""SHA-256 in the forms fedsilo stores it: hex, base64, and over canonical JSON.

One home, so that a digest written by one module (an update's ``x-amz-meta-sha256``, a manifest,
a ledger entry, a join request's binding) is computed exactly as the module that checks it
computes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from fl_core.types import Sha256Hex

Bytes = bytes | bytearray | memoryview


def sha256_hex(data: Bytes) -> Sha256Hex:
    """Hex SHA-256: the form in ``x-amz-meta-sha256``, in exchange manifests and the ledger."""
    return hashlib.sha256(data).hexdigest()


def sha256_b64(data: Bytes) -> str:
    """Base64 SHA-256: the form S3's ``ChecksumSHA256`` takes."""
    return digest_b64(hashlib.sha256(data).digest())


def digest_b64(digest: bytes) -> str:
    """A raw digest in base64, for a write whose SHA-256 its caller already holds."""
    return base64.b64encode(digest).decode("ascii")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the same value gives the same text on every machine."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def canonical_json_sha256(value: Any) -> Sha256Hex:
    """Hex SHA-256 of ``canonical_json(value)``: a digest two parties recompute independently."""
    return sha256_hex(canonical_json(value).encode())
