"""A hospital's one report before round 1: the feature moments of its training split.

The global model standardises its inputs with buffers built from every hospital's counts and
sums, so the hospitals report them through the exchange, exactly where the aggregator of a
real deployment reads them; no row of patients leaves the hospital. The same report carries
the hospital's data profile (counts on fixed bins, missingness), its disclosure floor applied,
so the centre can show the federation's cohort before training without another document.
"""

from __future__ import annotations

import structlog

from fl_client.disclosure import disclose_moments
from fl_core.data.base import SiteData
from fl_core.data.feature_schema import schema_from_names
from fl_core.data.profile import site_profile
from fl_core.data.standardise import FeatureMoments
from fl_core.disclosure import DisclosureFloor
from fl_core.errors import ObjectExistsError
from fl_core.exchange.manifests import MomentsReport
from fl_core.exchange.protocol import Exchange

PROFILE_MIN_STAYS = 10
"""The profile's floor for a hospital without a site policy: no count of fewer stays."""

log = structlog.get_logger("fedsilo.client")


def moments_report(
    federation_id: str, data: SiteData, floor: DisclosureFloor | None = None
) -> MomentsReport:
    moments = FeatureMoments.of(data.train.x)
    min_stays = PROFILE_MIN_STAYS if floor is None else floor.min_stays
    profile = site_profile(data.train.x, schema_from_names(data.feature_names), min_stays)
    report = MomentsReport(
        federation_id=federation_id,
        site_id=data.site_id,
        num_examples=data.train.num_examples,
        count=moments.count.tolist(),
        total=moments.total.tolist(),
        total_sq=moments.total_sq.tolist(),
        profile=profile,
    )
    return disclose_moments(report, data.feature_names, floor)


def publish_moments(
    exchange: Exchange, data: SiteData, floor: DisclosureFloor | None = None
) -> None:
    """Report once; a hospital restarted with other data keeps its first report."""
    try:
        exchange.write_moments(moments_report(exchange.federation_id, data, floor))
    except ObjectExistsError:
        log.warning(
            "moments_already_reported",
            site_id=data.site_id,
            detail="an earlier report with other values stands; the federation uses it",
        )
        return
    log.info("moments_reported", site_id=data.site_id, num_examples=data.train.num_examples)
