"""Update manifests for tests: a hospital's answer, valid unless a test changes a field."""

from __future__ import annotations

import secrets
from typing import Any

from fl_core.exchange.manifests import GlobalManifest, UpdateManifest

DEFAULT_UPDATE: dict[str, Any] = {
    "federation_id": "f",
    "site_id": "site-a",
    "round_index": 2,
    "task": "train",
    "global_sha256": "1" * 64,
    "num_examples": 40,
    "nonce": "ab" * 16,
    "train_loss": 0.3,
}


def update_manifest(**changes: Any) -> UpdateManifest:
    """``DEFAULT_UPDATE`` with ``changes``: a training answer of site-a to round 2."""
    return UpdateManifest(**{**DEFAULT_UPDATE, **changes})


def answer_to(manifest: GlobalManifest, site_id: str, **changes: Any) -> UpdateManifest:
    """``site_id``'s training answer to ``manifest``'s round (50 examples, a fresh nonce)."""
    fields: dict[str, Any] = {
        "federation_id": manifest.federation_id,
        "site_id": site_id,
        "round_index": manifest.round_index,
        "task": manifest.task,
        "global_sha256": manifest.sha256,
        "num_examples": 50,
        "nonce": secrets.token_hex(16),
        "train_loss": 0.5,
    }
    return UpdateManifest(**{**fields, **changes})
