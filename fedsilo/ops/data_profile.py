"""The federation's data profile before training, from the hospitals' round-0 reports.

Each hospital's moments report carries its profile (counts on fixed bins and missingness per
feature, its disclosure floor applied). The centre reads every report, refuses the malformed
ones with the aggregator's own checks, and adds the rest bin by bin: the pooled cohort is
shown without a row or a small count leaving any hospital, and every withheld cell is named.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from fl_core.data.profile import PooledProfile, SiteProfile, common_names, pool_profiles
from fl_core.errors import ObjectTooLargeError, ObjectUnreadableError, UpdateRejectedError
from fl_core.exchange.protocol import Exchange
from fl_core.ids import check_site_id
from fl_core.types import SiteId
from fl_server.moments import check_moments, max_report_bytes

PROFILE_JSON = "data-profile.json"
PROFILE_HTML = "data-profile.html"
MAX_PROFILE_FEATURES = 1_000
"""A report larger than one of this many features is refused unread (eICU has about 130)."""
_MOMENTS_SUFFIX = ".moments.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SiteSize(_Frozen):
    site_id: str
    num_examples: int
    min_count: int
    """The floor the hospital applied to its profile."""


class FederatedDataProfile(_Frozen):
    """What ``fedsilo data profile`` writes (``data-profile.json``)."""

    federation_id: str
    sites: list[SiteSize]
    without_profile: list[str]
    """Hospitals whose valid report carries no profile (older clients)."""
    refused: dict[str, str]
    """Hospitals whose report was refused, with the aggregator's reason."""
    pooled: PooledProfile


def reported_sites(exchange: Exchange) -> list[SiteId]:
    """Every site with a moments report, matched against the whole key (never a suffix)."""
    sites = []
    for key in exchange.store.list_keys(exchange.layout.preflight_prefix()):
        if not key.endswith(_MOMENTS_SUFFIX):
            continue
        name = key[len(exchange.layout.preflight_prefix()) : -len(_MOMENTS_SUFFIX)]
        try:
            site_id = check_site_id(name)
        except ValueError:
            continue
        if exchange.layout.moments_key(site_id) == key:
            sites.append(site_id)
    return sites


def federated_profile(exchange: Exchange, max_examples: int) -> FederatedDataProfile:
    """Read, check and pool every hospital's profile; a bad report is named, never fatal."""
    profiles: dict[str, SiteProfile] = {}
    present: dict[str, list[float]] = {}
    sizes: list[SiteSize] = []
    without: list[str] = []
    refused: dict[str, str] = {}
    for site_id in reported_sites(exchange):
        try:
            data = exchange.read_moments_bounded(site_id, max_report_bytes(MAX_PROFILE_FEATURES))
            if data is None:
                continue
            report, _ = check_moments(data, site_id, exchange.federation_id, None, max_examples)
        except ObjectTooLargeError:
            refused[site_id] = "too_large"
            continue
        except ObjectUnreadableError:
            refused[site_id] = "unreadable"
            continue
        except UpdateRejectedError as rejected:
            refused[site_id] = rejected.reason
            continue
        if report.profile is None:
            without.append(site_id)
            continue
        profiles[site_id] = report.profile
        present[site_id] = report.count
        sizes.append(
            SiteSize(
                site_id=site_id,
                num_examples=report.num_examples,
                min_count=report.profile.min_count,
            )
        )
    pooled = pool_profiles(profiles, present, common_names(profiles))
    return FederatedDataProfile(
        federation_id=exchange.federation_id,
        sites=sizes,
        without_profile=without,
        refused=refused,
        pooled=pooled,
    )
