"""The audit ledger's hash chain: each entry commits to its content and its predecessor."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def chain_hash(fields: Mapping[str, Any]) -> str:
    """sha256 of the entry's canonical JSON (which includes ``prev_hash``)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
