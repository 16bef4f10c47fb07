"""Update admission: every check an update must pass before it may touch the running sum.

Checks run cheapest first and never decode tensors before the header agrees with the global
model. A failure raises ``UpdateRejectedError`` with a stable ``reason`` code that goes into
``result.json`` and the log.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from fl_core.errors import CodecError, HeaderError, UpdateRejectedError
from fl_core.exchange.manifests import MANIFEST_METADATA_KEY, Task, UpdateManifest
from fl_core.hashing import sha256_hex
from fl_core.serialisation import (
    SafetensorsHeader,
    TensorSpec,
    read_header,
    view_weights,
)
from fl_core.types import Sha256Hex, SiteId, Weights
from fl_core.validation import first_error


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
    check_finite: bool = True
    """False where the aggregator scans every value for NaN/Inf as it adds it (in cache, in
    the same pass: ``ServerAggregator.checks_finite``), so admission does not read the update
    a second time for it."""


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
        raise UpdateRejectedError("malformed_manifest", first_error(err)) from err
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
    # a decline that says why it has no rows, or that the site policy refused the round
    low = 0 if manifest.declined in ("no_training_rows", "policy") else 1
    if ctx.task == "train" and not low <= manifest.num_examples <= ctx.max_num_examples:
        raise UpdateRejectedError(
            "bad_num_examples",
            f"num_examples {manifest.num_examples} outside 1..{ctx.max_num_examples}",
        )
    return manifest


def check_weights_size(num_bytes: int, ctx: AdmissionContext) -> None:
    """Called with the stored object's size before it is downloaded."""
    if num_bytes > ctx.max_update_bytes:
        raise UpdateRejectedError(
            "too_large", f"update file is {num_bytes} bytes, limit {ctx.max_update_bytes}"
        )


def update_metadata(manifest: UpdateManifest) -> dict[str, str]:
    """The metadata of a training answer's file: its manifest, inside the bytes it describes.

    A copied file therefore names the site, round and nonce it was made for, and the ledger's
    sha256 of the file covers the manifest too.
    """
    return {MANIFEST_METADATA_KEY: manifest.model_dump_json()}


def embedded_manifest(metadata: Mapping[str, str]) -> bytes:
    """A training answer's manifest, as bytes for ``check_manifest``."""
    document = metadata.get(MANIFEST_METADATA_KEY)
    if document is None:
        raise UpdateRejectedError(
            "malformed_manifest",
            f"update file has no {MANIFEST_METADATA_KEY!r} metadata: a training answer carries "
            "its manifest inside the safetensors file",
        )
    try:
        return document.encode()
    except UnicodeEncodeError as err:  # read_header refuses these; a hand-built mapping may not
        raise UpdateRejectedError("malformed_manifest", "manifest is not UTF-8 text") from err


def _header(data: bytes) -> SafetensorsHeader:
    """The file's header, or the rejection: ``malformed_header`` where the JSON header is not
    one, ``malformed_tensors`` where the file is not safetensors or disagrees with it."""
    try:
        return read_header(data)
    except HeaderError as err:
        raise UpdateRejectedError("malformed_header", str(err)) from err
    except CodecError as err:
        raise UpdateRejectedError("malformed_tensors", str(err)) from err


def check_update_file(
    data: bytes, key_site_id: SiteId, ctx: AdmissionContext, sha256: Sha256Hex | None = None
) -> tuple[UpdateManifest, Sha256Hex, Weights]:
    """A training answer: its manifest (``check_manifest``), then its tensors; cheapest first.

    Returns the manifest, the file's sha256 (what the ledger and replay protection record)
    and read-only views of the tensors. ``sha256``: the digest of these very bytes where the
    store already computed it to verify them (``ObjectStore.get_verified``); otherwise they
    are hashed here.
    """
    check_weights_size(len(data), ctx)
    header = _header(data)
    manifest = check_manifest(embedded_manifest(header.metadata), key_site_id, ctx)
    if manifest.declined is not None:
        raise UpdateRejectedError("malformed_manifest", "a declined round carries no tensors")
    digest = sha256 if sha256 is not None else sha256_hex(data)
    if digest in ctx.seen_sha256:
        raise UpdateRejectedError("replayed", f"identical bytes {digest[:12]} were sent before")
    return manifest, digest, _check_tensors(data, header, ctx)


def _check_tensors(data: bytes, header: SafetensorsHeader, ctx: AdmissionContext) -> Weights:
    """Names, dtypes and shapes against the global model, then the values themselves."""
    specs = header.specs
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
        weights = view_weights(data, header)
    except CodecError as err:
        raise UpdateRejectedError("malformed_tensors", str(err)) from err
    for name, array in weights.items():
        if ctx.field_bits is not None:
            if ctx.field_bits < 64 and array.size and int(array.max()) >> ctx.field_bits:
                raise UpdateRejectedError(
                    "out_of_field", f"{name} holds values >= 2**{ctx.field_bits}"
                )
        elif ctx.check_finite and not all_finite(array):
            raise UpdateRejectedError("non_finite", f"{name} holds NaN or Inf")
    return weights


FINITE_CHUNK_ELEMENTS = 1 << 17
"""Elements checked at a time: the flags fit in cache instead of costing one byte a parameter."""


def all_finite(array: npt.NDArray[np.generic]) -> bool:
    """Whether every value is finite (integers always are), a slice at a time."""
    if array.dtype.kind not in "fc":  # integers and booleans are always finite
        return True
    flat = array.reshape(-1)
    if flat.size <= FINITE_CHUNK_ELEMENTS:  # one slice: no scratch, no loop (small models)
        return bool(np.isfinite(flat).all())
    flags = np.empty(min(flat.size, FINITE_CHUNK_ELEMENTS), dtype=np.bool_)
    for start in range(0, flat.size, FINITE_CHUNK_ELEMENTS):
        part = flat[start : start + FINITE_CHUNK_ELEMENTS]
        checked = flags[: part.size]
        np.isfinite(part, out=checked)
        if not checked.all():
            return False
    return True
