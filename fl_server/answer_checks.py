"""Every admission check of one hospital's answer, and the verdict when one fails.

The checks read the exchange and the round's admission context and change nothing, so the
round loop runs them ahead on worker threads (``fl_server.lookahead``) while it adds the
previous update to the sum. What a hospital wrote is hostile input: every failure is an
``UpdateRejectedError`` with a reason, recorded as that site's rejection, never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from fl_core.admission import (
    AdmissionContext,
    check_manifest,
    check_update_file,
    check_weights_size,
)
from fl_core.errors import (
    ChecksumMissingError,
    ExchangeError,
    ObjectIntegrityError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    ObjectUnreadableError,
    UpdateRejectedError,
)
from fl_core.exchange.manifests import Decision, Sha256Source, UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.types import Sha256Hex, SiteId
from fl_server.aggregator import AdmittedUpdate
from fl_server.round_metrics import check_bins
from fl_server.weight_bounds import check_registered_claim

log = structlog.get_logger("fedsilo.server")

READ_FAULTS = (ObjectIntegrityError, ObjectNotFoundError, ObjectUnreadableError)
"""Bytes that fail the store's own checksum, that vanished, or that the store will not give
(SSE-C, the hospital's own KMS key, refused): the hospital's doing, never the federation's."""


@dataclass(frozen=True)
class CheckedAnswer:
    """An answer that passed admission."""

    manifest: UpdateManifest
    sha256: Sha256Hex | None
    """The update file's sha256 (training rounds), and who vouches for it below."""
    sha256_source: Sha256Source
    update: AdmittedUpdate | None
    """The update to add to the sum (an accepted training answer)."""


def read_fault_reason(err: ExchangeError) -> str:
    """The rejection reason of an answer the store could not hand over intact."""
    if isinstance(err, ChecksumMissingError):
        return "missing_checksum"
    if isinstance(err, ObjectIntegrityError):
        return "sha256_mismatch"
    if isinstance(err, ObjectUnreadableError):
        return "unreadable"
    return "missing"


def rejection(
    round_index: int, site_id: SiteId, rejected: UpdateRejectedError, now: float
) -> Decision:
    """The decision recording ``rejected`` (logged with its reason)."""
    log.warning(
        "update_rejected",
        round_index=round_index,
        site_id=site_id,
        reason=rejected.reason,
        detail=rejected.detail,
    )
    return Decision(
        site_id=site_id,
        status="rejected",
        reason=rejected.reason,
        detail=rejected.detail[:500],
        decided_unix=now,
    )


def check_reports(manifest: UpdateManifest, num_bins: int) -> None:
    """An answer's evaluation and validation histograms have the configured bins."""
    if manifest.evaluation is not None:
        check_bins(manifest.evaluation, num_bins)
    if manifest.validation is not None:
        check_bins(manifest.validation, num_bins)


def check_answer(
    exchange: Exchange,
    context: AdmissionContext,
    registered: Mapping[SiteId, int],
    num_bins: int,
    site_id: SiteId,
) -> CheckedAnswer:
    """Every admission check, cheapest first; raises ``UpdateRejectedError``.

    In a training round the answer is the site's ``.safetensors`` file, manifest inside; a
    ``.json`` alone is accepted there only as a declined round. ``registered``: the training
    rows the sites reported before round 1, which bound what they may claim.
    """
    round_index = context.round_index
    if context.task == "train":
        try:  # one read: the store checks the size it learns before the bytes
            data, known = exchange.read_update_weights_verified(
                round_index, site_id, context.max_update_bytes
            )
        except ObjectNotFoundError:
            data, known = None, None
        except ObjectTooLargeError as err:
            check_weights_size(err.size, context)  # too_large
            raise
        if data is not None:  # S3's stored checksum is the digest: no second hash
            manifest, digest, weights = check_update_file(data, site_id, context, known)
            check_reports(manifest, num_bins)
            check_registered_claim(site_id, manifest.num_examples, registered)
            update = AdmittedUpdate(site_id, manifest.num_examples, data, weights)
            source: Sha256Source = "computed" if known is None else "s3_checksum"
            return CheckedAnswer(manifest, digest, source, update)
    try:  # one read, sized before its body as the training file is
        data = exchange.read_standalone_manifest_bytes(
            round_index, site_id, context.max_manifest_bytes
        )
    except ObjectTooLargeError as err:
        raise UpdateRejectedError("too_large", f"manifest is {err.size} bytes") from err
    manifest = check_manifest(data, site_id, context)
    check_reports(manifest, num_bins)
    if context.task == "train" and manifest.declined is None:
        raise UpdateRejectedError(
            "missing_tensors",
            f"a training answer is {site_id}.safetensors with its manifest inside; "
            f"{site_id} wrote only {site_id}.json",
        )
    return CheckedAnswer(manifest, None, "computed", None)
