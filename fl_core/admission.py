"""Update admission: every check an update must pass before it may touch the running sum.

Checks run cheapest first and never decode tensors before the header agrees with the global
model. A failure raises ``UpdateRejectedError`` with a stable ``reason`` code that goes into
``result.json`` and the log.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from fl_core.errors import CodecError, UpdateRejectedError
from fl_core.exchange.manifests import Task, UpdateManifest
from fl_core.serialization import (
    TensorSpec,
    read_header,
    sha256_hex,
    view_weights,
)
from fl_core.types import Sha256Hex, SiteId, Weights


@dataclass(frozen=True)
class AdmissionContext:
    """What the aggregator expects of every update in the current round."""

    federation_id: str
    round_index: int
    task: Task
    global_sha256: Sha256Hex
    invited_sites: frozenset[SiteId]
    tensor_specs: Mapping[str, TensorSpec]
    max_update_bytes: int
    max_manifest_bytes: int
    max_num_examples: int
    revoked_sites: frozenset[SiteId] = frozenset()
    seen_nonces: Set[str] = field(default_factory=frozenset)
    seen_sha256: Set[Sha256Hex] = field(default_factory=frozenset)
    field_bits: int | None = None
    """Secure aggregation: updates are uint64 ring elements, each below 2**field_bits."""


@dataclass(frozen=True)
class AdmittedUpdate:
    manifest: UpdateManifest
    weights: Weights | None

    @property
    def site_id(self) -> SiteId:
        return self.manifest.site_id


def check_manifest(
    manifest_bytes: bytes, key_site_id: SiteId, ctx: AdmissionContext
) -> UpdateManifest:
    """Parse and check a manifest against the round; no tensors are read yet."""
    if len(manifest_bytes) > ctx.max_manifest_bytes:
        raise UpdateRejectedError(
            "too_large", f"manifest is {len(manifest_bytes)} bytes, limit {ctx.max_manifest_bytes}"
        )
    try:
        manifest = UpdateManifest.model_validate_json(manifest_bytes)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise UpdateRejectedError("malformed_manifest", f"{where}: {first['msg']}") from err
    if manifest.site_id != key_site_id:
        raise UpdateRejectedError(
            "site_mismatch",
            f"manifest names site {manifest.site_id!r} but was written under {key_site_id!r}",
        )
    if key_site_id in ctx.revoked_sites:
        raise UpdateRejectedError("revoked_site", f"site {key_site_id!r} was offboarded")
    if key_site_id not in ctx.invited_sites:
        raise UpdateRejectedError("unknown_site", f"site {key_site_id!r} is not invited")
    if manifest.federation_id != ctx.federation_id:
        raise UpdateRejectedError(
            "wrong_federation", f"update is for federation {manifest.federation_id!r}"
        )
    if manifest.round_index != ctx.round_index or manifest.global_sha256 != ctx.global_sha256:
        raise UpdateRejectedError(
            "stale_round",
            f"update is for round {manifest.round_index} / global "
            f"{manifest.global_sha256[:12]}, current round {ctx.round_index} / "
            f"{ctx.global_sha256[:12]}",
        )
    if manifest.task != ctx.task:
        raise UpdateRejectedError("wrong_task", f"round asks for {ctx.task}, got {manifest.task}")
    if manifest.nonce in ctx.seen_nonces:
        raise UpdateRejectedError("replayed", f"nonce {manifest.nonce[:12]} was used before")
    if ctx.task == "train" and not 0 < manifest.num_examples <= ctx.max_num_examples:
        raise UpdateRejectedError(
            "bad_num_examples",
            f"num_examples {manifest.num_examples} outside 1..{ctx.max_num_examples}",
        )
    if manifest.num_bytes is not None and manifest.num_bytes > ctx.max_update_bytes:
        raise UpdateRejectedError(
            "too_large", f"update declares {manifest.num_bytes} bytes, limit {ctx.max_update_bytes}"
        )
    return manifest


def check_weights_size(num_bytes: int, ctx: AdmissionContext) -> None:
    """Called with the stored object's size before it is downloaded."""
    if num_bytes > ctx.max_update_bytes:
        raise UpdateRejectedError(
            "too_large", f"update file is {num_bytes} bytes, limit {ctx.max_update_bytes}"
        )


def update_metadata(manifest: UpdateManifest) -> dict[str, str]:
    """What an update file must say about itself, inside the bytes its sha256 covers."""
    return {
        "fedsilo.site_id": manifest.site_id,
        "fedsilo.round_index": str(manifest.round_index),
        "fedsilo.nonce": manifest.nonce,
    }


def check_binding(metadata: Mapping[str, str], manifest: UpdateManifest) -> None:
    """The file must name the manifest's site, round and nonce: a copied file cannot."""
    expected = update_metadata(manifest)
    if metadata.get("fedsilo.site_id") != expected["fedsilo.site_id"]:
        raise UpdateRejectedError(
            "site_mismatch",
            f"update file was made by site {metadata.get('fedsilo.site_id')!r}, "
            f"not {manifest.site_id!r}",
        )
    if metadata.get("fedsilo.round_index") != expected["fedsilo.round_index"]:
        raise UpdateRejectedError(
            "stale_round",
            f"update file was made for round {metadata.get('fedsilo.round_index')!r}",
        )
    if metadata.get("fedsilo.nonce") != expected["fedsilo.nonce"]:
        raise UpdateRejectedError("replayed", "update file carries another answer's nonce")


def check_weights(manifest: UpdateManifest, weights_bytes: bytes, ctx: AdmissionContext) -> Weights:
    """Verify and decode the tensors a manifest announced."""
    check_weights_size(len(weights_bytes), ctx)
    digest = sha256_hex(weights_bytes)
    if digest != manifest.sha256 or len(weights_bytes) != manifest.num_bytes:
        raise UpdateRejectedError(
            "sha256_mismatch", "update bytes do not match the sha256/num_bytes of its manifest"
        )
    if digest in ctx.seen_sha256:
        raise UpdateRejectedError("replayed", f"identical bytes {digest[:12]} were sent before")
    try:
        header = read_header(weights_bytes)
    except CodecError as err:
        raise UpdateRejectedError("malformed_tensors", str(err)) from err
    specs = header.specs
    check_binding(header.metadata, manifest)
    missing = sorted(ctx.tensor_specs.keys() - specs.keys())
    extra = sorted(specs.keys() - ctx.tensor_specs.keys())
    if missing or extra:
        raise UpdateRejectedError("wrong_tensors", f"missing {missing[:5]}, unexpected {extra[:5]}")
    for name, expected in ctx.tensor_specs.items():
        if specs[name].dtype != expected.dtype:
            raise UpdateRejectedError(
                "wrong_dtype", f"{name} is {specs[name].dtype}, expected {expected.dtype}"
            )
        if specs[name].shape != expected.shape:
            raise UpdateRejectedError(
                "wrong_shape", f"{name} has shape {specs[name].shape}, expected {expected.shape}"
            )
    try:
        weights = view_weights(weights_bytes, header)
    except CodecError as err:
        raise UpdateRejectedError("malformed_tensors", str(err)) from err
    for name, array in weights.items():
        if ctx.field_bits is not None:
            if ctx.field_bits < 64 and array.size and int(array.max()) >> ctx.field_bits:
                raise UpdateRejectedError(
                    "out_of_field", f"{name} holds values >= 2**{ctx.field_bits}"
                )
        elif not np.isfinite(array).all():
            raise UpdateRejectedError("non_finite", f"{name} holds NaN or Inf")
    return weights
