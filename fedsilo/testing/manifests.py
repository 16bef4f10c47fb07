"""Update manifests for tests: a hospital's answer, valid unless a test changes a field."""

from __future__ import annotations

import secrets
from typing import Any

from fl_core.admission import AdmissionContext
from fl_core.exchange.manifests import GlobalManifest, UpdateManifest
from fl_core.serialisation import TensorSpec

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


def admission_context(**changes: Any) -> AdmissionContext:
    """The round ``update_manifest()`` answers, with ``changes``: it admits site-a's float32
    tensors ``w`` (2, 3) and ``b`` (3,)."""
    fields: dict[str, Any] = {
        "federation_id": DEFAULT_UPDATE["federation_id"],
        "round_index": DEFAULT_UPDATE["round_index"],
        "task": DEFAULT_UPDATE["task"],
        "global_sha256": DEFAULT_UPDATE["global_sha256"],
        "invited_sites": frozenset({DEFAULT_UPDATE["site_id"]}),
        "tensor_specs": {"w": TensorSpec("float32", (2, 3)), "b": TensorSpec("float32", (3,))},
        "max_update_bytes": 1 << 20,
        "max_manifest_bytes": 1 << 16,
        "max_num_examples": 1000,
    }
    return AdmissionContext(**{**fields, **changes})


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
