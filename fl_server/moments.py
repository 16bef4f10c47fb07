"""Gather the hospitals' feature moments before round 1 and validate them.

A moments report crosses a trust boundary: a malformed or impossible one (wrong length,
NaN, negative counts, a variance below zero) is rejected with a reason and leaves that
hospital out of the standardisation, never out of the federation. The aggregator waits for
every invited hospital until the round deadline, then goes on with a quorum.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog
from pydantic import ValidationError

from fl_core.config import FederationConfig
from fl_core.data.profile import MAX_PROFILE_EDGES
from fl_core.data.standardise import FeatureMoments
from fl_core.errors import (
    ObjectNotFoundError,
    ObjectUnreadableError,
    RoundFailedError,
    UpdateRejectedError,
)
from fl_core.exchange.manifests import MomentsReport
from fl_core.exchange.protocol import Exchange
from fl_core.types import SiteId
from fl_core.validation import first_error

log = structlog.get_logger("fedsilo.server")

# relative slack on sum of squares >= sum^2 / count (float rounding at the hospital)
_CAUCHY_SCHWARZ_SLACK = 1e-6


@dataclass
class GatheredMoments:
    moments: dict[SiteId, FeatureMoments] = field(default_factory=dict)
    rejected: dict[SiteId, str] = field(default_factory=dict)

    def missing(self, sites: Sequence[SiteId]) -> list[SiteId]:
        return [s for s in sites if s not in self.moments and s not in self.rejected]


PROFILE_BYTES_PER_FEATURE = 256 + (MAX_PROFILE_EDGES + 1) * 64
"""A feature's profile at its largest: its name, and edges and counts one a line."""


def max_report_bytes(num_features: int) -> int:
    """The most bytes an honest report of ``num_features`` can take: three lists of floats of
    at most 25 characters each, indented one a line, the few other fields, and a profile."""
    return 8192 + (3 * 48 + PROFILE_BYTES_PER_FEATURE) * num_features


def check_profile(report: MomentsReport) -> None:
    """A profile must describe the reported moments: one entry per feature, never more rows
    in a feature's bins than it has values, its missing rows the rest of ``num_examples``.

    Raises ``UpdateRejectedError("malformed_profile")``; the whole report is then refused,
    as for any other malformed part of it. A feature whose moments the hospital's floor held
    back is not checked (its floor also withholds its small profile cells).
    """
    profile = report.profile
    if profile is None:
        return
    if len(profile.features) != len(report.count):
        raise UpdateRejectedError(
            "malformed_profile",
            f"profile has {len(profile.features)} features, the moments {len(report.count)}",
        )
    held_back = {s.path for s in report.suppressed}
    for feature, present in zip(profile.features, report.count, strict=True):
        if {"moments", f"moments.{feature.name}"} & held_back:
            continue  # its moments are reported as 0: nothing to hold the profile against
        shown = [c for c in feature.counts if c is not None]
        complete = len(shown) == len(feature.counts)
        if sum(shown) > present or (complete and sum(shown) != present):
            raise UpdateRejectedError(
                "malformed_profile",
                f"feature {feature.name!r}: bins hold {sum(shown)} rows, the moments {present:g}",
            )
        if feature.missing is not None and feature.missing + present != report.num_examples:
            raise UpdateRejectedError(
                "malformed_profile",
                f"feature {feature.name!r}: {feature.missing} missing and {present:g} present "
                f"rows are not num_examples {report.num_examples}",
            )


def _check_size(num_bytes: int, num_features: int) -> None:
    limit = max_report_bytes(num_features)
    if num_bytes > limit:
        raise UpdateRejectedError(
            "too_large", f"moments report is {num_bytes} bytes, limit {limit} for the model"
        )


def check_moments(
    data: bytes, site_id: SiteId, federation_id: str, num_features: int | None, max_examples: int
) -> tuple[MomentsReport, FeatureMoments]:
    """Parse and check one report; raises ``UpdateRejectedError`` naming the problem.

    ``num_features`` None: the model is not at hand (the weight bounds read the reported
    rows), so the three lists need only agree with each other; every other rule holds, so
    a report the standardisation refuses never registers rows either.
    """
    if num_features is not None:
        _check_size(len(data), num_features)
    try:
        report = MomentsReport.model_validate_json(data)
    except ValidationError as err:
        raise UpdateRejectedError(
            "malformed_moments", f"moments report: {first_error(err)}"
        ) from err
    if report.site_id != site_id or report.federation_id != federation_id:
        raise UpdateRejectedError(
            "site_mismatch",
            f"moments report names {report.site_id}/{report.federation_id} but sits under "
            f"{site_id}/{federation_id}",
        )
    if report.num_examples > max_examples:
        raise UpdateRejectedError("too_large", f"num_examples {report.num_examples}")
    arrays = [
        np.asarray(values, dtype=np.float64)
        for values in (report.count, report.total, report.total_sq)
    ]
    expected = (arrays[0].size,) if num_features is None else (num_features,)
    if any(a.shape != expected for a in arrays):
        raise UpdateRejectedError(
            "shape_mismatch",
            f"moments have lengths {[a.size for a in arrays]}, the model has "
            f"{expected[0]} features",
        )
    if not all(np.isfinite(a).all() for a in arrays):
        raise UpdateRejectedError("non_finite", "moments hold NaN or Inf")
    count, total, total_sq = arrays
    if (count < 0).any() or (count > report.num_examples).any() or (total_sq < 0).any():
        raise UpdateRejectedError(
            "out_of_range", "counts must lie in [0, num_examples] and sums of squares >= 0"
        )
    with np.errstate(over="ignore"):  # a square beyond float64 is inf, which no sum passes
        floor = np.where(count > 0, total * total / np.maximum(count, 1.0), 0.0)
    if (total_sq < floor * (1 - _CAUCHY_SCHWARZ_SLACK) - 1e-9).any():
        raise UpdateRejectedError("out_of_range", "a sum of squares is below sum^2 / count")
    check_profile(report)
    return report, FeatureMoments(count, total, total_sq)


def _read_report(exchange: Exchange, site_id: SiteId, num_features: int) -> bytes | None:
    """A hospital's report (None: not written yet), sized before it is read: one of
    gigabytes is refused, never downloaded."""
    try:
        size = exchange.store.size(exchange.layout.moments_key(site_id))
        _check_size(size, num_features)
        return exchange.read_moments_bytes(site_id)
    except ObjectNotFoundError:
        return None
    except ObjectUnreadableError as err:  # SSE-C, its own KMS key: that hospital's doing
        raise UpdateRejectedError("unreadable", str(err).splitlines()[0]) from err


def gather_moments(
    exchange: Exchange,
    sites: Sequence[SiteId],
    num_features: int,
    config: FederationConfig,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> list[FeatureMoments]:
    """Every invited hospital's moments, or a quorum of them by the round deadline."""
    gathered = GatheredMoments()
    give_up = clock() + config.round.deadline_s
    interval = config.round.poll_interval_s
    while True:
        for site_id in gathered.missing(sites):
            try:
                data = _read_report(exchange, site_id, num_features)
                if data is None:
                    continue
                _, gathered.moments[site_id] = check_moments(
                    data,
                    site_id,
                    exchange.federation_id,
                    num_features,
                    config.admission.max_num_examples,
                )
            except UpdateRejectedError as rejected:
                gathered.rejected[site_id] = rejected.reason
                log.warning(
                    "moments_rejected",
                    site_id=site_id,
                    reason=rejected.reason,
                    detail=rejected.detail,
                )
        if not gathered.missing(sites):
            break
        if clock() >= give_up:
            break
        sleep(interval)
        interval = min(interval * 1.5, 1.0)
    if len(gathered.moments) < config.round.min_sites:
        raise RoundFailedError(
            f"only {len(gathered.moments)} of {len(sites)} hospitals reported valid feature "
            f"moments by the deadline (round.min_sites is {config.round.min_sites}; rejected: "
            f"{gathered.rejected or 'none'}); check the hospitals that did not report"
        )
    log.info(
        "moments_gathered",
        reported=len(gathered.moments),
        rejected=len(gathered.rejected),
        missing=len(gathered.missing(sites)),
    )
    return [gathered.moments[s] for s in sites if s in gathered.moments]
