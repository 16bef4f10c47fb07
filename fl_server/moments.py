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
    ObjectTooLargeError,
    ObjectUnreadableError,
    RoundFailedError,
    UpdateRejectedError,
)
from fl_core.exchange.manifests import MomentsReport
from fl_core.exchange.protocol import Exchange
from fl_core.types import SiteId
from fl_core.validation import first_error
from fl_server.moments_reports import (
    CHECKED_REPORTS,
    CheckedReport,
    Refusal,
    ReportFacts,
    report_key,
)

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
    checked = _check_report(data, site_id, federation_id, max_examples)
    if isinstance(checked, Refusal):
        checked.raise_again()
    report, facts = checked
    return report, _held_to_model(facts, num_features)[1]


def check_report_once(
    data: bytes, site_id: SiteId, federation_id: str, num_features: int | None, max_examples: int
) -> tuple[int, FeatureMoments]:
    """``check_moments`` for the aggregator, which meets each report twice before round 1
    (the standardisation, the weight bounds): the rows it registers and its moments.

    The same bytes are parsed and checked once per process (``fl_server.moments_reports``
    keeps what was found, not the parsed report, whose many small objects would stay alive
    for the garbage collector to walk); the rules that need ``num_features`` are applied
    each time, in their place among the others, so every refusal keeps its reason.
    """
    if num_features is not None:
        _check_size(len(data), num_features)
    key = report_key(data, site_id, federation_id, max_examples)
    checked = CHECKED_REPORTS.checked(
        key, len(data), lambda: _facts_of(_check_report(data, site_id, federation_id, max_examples))
    )
    return _held_to_model(checked, num_features)


def _held_to_model(checked: CheckedReport, num_features: int | None) -> tuple[int, FeatureMoments]:
    """The report's rows and moments, or its refusal: the lengths are held to the model's
    feature count (or to each other, ``num_features`` None) before the values are looked at."""
    if isinstance(checked, Refusal):
        checked.raise_again()
    expected = checked.lengths[0] if num_features is None else num_features
    if any(length != expected for length in checked.lengths):
        raise UpdateRejectedError(
            "shape_mismatch",
            f"moments have lengths {list(checked.lengths)}, the model has {expected} features",
        )
    if isinstance(checked.content, Refusal):
        checked.content.raise_again()
    return checked.num_examples, checked.content


def _facts_of(checked: Refusal | tuple[MomentsReport, ReportFacts]) -> CheckedReport:
    return checked if isinstance(checked, Refusal) else checked[1]


def _check_report(
    data: bytes, site_id: SiteId, federation_id: str, max_examples: int
) -> Refusal | tuple[MomentsReport, ReportFacts]:
    """The refusal, or the parsed report and what the rules that do not need the model's
    feature count found, in ``check_moments``' order."""
    try:
        report = MomentsReport.model_validate_json(data)
    except ValidationError as err:
        return Refusal("malformed_moments", f"moments report: {first_error(err)}")
    if report.site_id != site_id or report.federation_id != federation_id:
        return Refusal(
            "site_mismatch",
            f"moments report names {report.site_id}/{report.federation_id} but sits under "
            f"{site_id}/{federation_id}",
        )
    if report.num_examples > max_examples:
        return Refusal("too_large", f"num_examples {report.num_examples}")
    lengths = (len(report.count), len(report.total), len(report.total_sq))
    if len(set(lengths)) > 1:  # refused for its shape before its values, with or without a model
        shape = Refusal("shape_mismatch", f"lengths {lengths}")
        return report, ReportFacts(report.num_examples, lengths, shape)
    try:
        content: FeatureMoments | Refusal = _check_values(report)
    except UpdateRejectedError as rejected:
        content = Refusal(rejected.reason, rejected.detail)
    return report, ReportFacts(report.num_examples, lengths, content)


def _check_values(report: MomentsReport) -> FeatureMoments:
    """The moments of a report whose three lists agree in length; raises
    ``UpdateRejectedError`` for impossible ones. Kept read-only: served to every caller."""
    count, total, total_sq = (
        np.asarray(values, dtype=np.float64)
        for values in (report.count, report.total, report.total_sq)
    )
    if not all(np.isfinite(a).all() for a in (count, total, total_sq)):
        raise UpdateRejectedError("non_finite", "moments hold NaN or Inf")
    if (count < 0).any() or (count > report.num_examples).any() or (total_sq < 0).any():
        raise UpdateRejectedError(
            "out_of_range", "counts must lie in [0, num_examples] and sums of squares >= 0"
        )
    with np.errstate(over="ignore"):  # a square beyond float64 is inf, which no sum passes
        floor = np.where(count > 0, total * total / np.maximum(count, 1.0), 0.0)
    if (total_sq < floor * (1 - _CAUCHY_SCHWARZ_SLACK) - 1e-9).any():
        raise UpdateRejectedError("out_of_range", "a sum of squares is below sum^2 / count")
    check_profile(report)
    for values in (count, total, total_sq):
        values.flags.writeable = False
    return FeatureMoments(count, total, total_sq)


def _read_report(exchange: Exchange, site_id: SiteId, num_features: int) -> bytes | None:
    """A hospital's report (None: not written yet), in one read sized before its body: one
    of gigabytes is refused, never downloaded."""
    try:
        return exchange.read_moments_bounded(site_id, max_report_bytes(num_features))
    except ObjectTooLargeError as err:
        _check_size(err.size, num_features)  # too_large, with the size
        raise
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
                _, gathered.moments[site_id] = check_report_once(
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
