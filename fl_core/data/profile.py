"""A hospital's data profile: per-feature counts on fixed bins and missingness, floor applied.

The bins of a feature follow from its kind and possible range alone (no quantiles, which
would disclose values), so every hospital bins the same way and the centre adds the counts.
A count under the disclosure floor is withheld, and so is enough of its neighbours that the
withheld cells can neither be recovered by subtraction from the feature's total (which the
moments report already carries) nor sum to fewer patients than the floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fl_core.data.feature_schema import FeatureSchema, SchemaFeature

RANGED_BINS = 10
"""Equal-width bins over a numeric feature's possible range."""
MAX_PROFILE_EDGES = 64
_BINARY_EDGES: tuple[float, ...] = (0.0, 0.5, 1.0)
_POSITIVE_SERIES = tuple(m * 10.0**e for e in range(-2, 5) for m in (1, 2, 5))
OPEN_EDGES: tuple[float, ...] = (
    *(-v for v in reversed(_POSITIVE_SERIES)),
    0.0,
    *_POSITIVE_SERIES,
)
"""A numeric feature without a known range: a 1-2-5 series from 0.01 to 50 000, both signs."""
MAX_PROFILE_COUNT = 2**40


def profile_edges(feature: SchemaFeature) -> tuple[float, ...]:
    """The bin edges of one feature: bins are ``(-inf, e0), [e0, e1), ..., [e_n, inf)``, with
    a value equal to the last edge counted in the last bin inside the edges."""
    if feature.kind != "numeric":
        return _BINARY_EDGES
    if feature.valid_range is None:
        return OPEN_EDGES
    low, high = feature.valid_range.low, feature.valid_range.high
    step = (high - low) / RANGED_BINS
    return (*(low + i * step for i in range(RANGED_BINS)), high)


def bin_counts(values: npt.NDArray[np.floating], edges: Sequence[float]) -> list[int]:
    """Counts of the present (non-NaN) values in ``len(edges) + 1`` bins."""
    present = values[~np.isnan(values)].astype(np.float64)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), present, side="right")
    index[present == edges[-1]] = len(edges) - 1
    return [int(c) for c in np.bincount(index, minlength=len(edges) + 1)]


def withheld_cells(counts: Sequence[int], min_count: int) -> set[int]:
    """Indices to withhold: every count in ``[1, min_count)``, then the smallest others until
    at least two are withheld and they hold at least ``min_count`` together (or none is left)."""
    withheld = {i for i, c in enumerate(counts) if 0 < c < min_count}
    if not withheld:
        return withheld
    shown = sorted((c, i) for i, c in enumerate(counts) if c > 0 and i not in withheld)
    while shown and (len(withheld) < 2 or sum(counts[i] for i in withheld) < min_count):
        withheld.add(shown.pop(0)[1])
    return withheld


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureProfile(_Frozen):
    """One feature at one hospital: counts per bin (None: withheld) and missing rows."""

    name: str = Field(min_length=1, max_length=200)
    edges: list[float] = Field(min_length=2, max_length=MAX_PROFILE_EDGES)
    counts: list[int | None] = Field(max_length=MAX_PROFILE_EDGES + 1)
    missing: int | None = Field(ge=0, le=MAX_PROFILE_COUNT)

    @model_validator(mode="after")
    def _consistent(self) -> FeatureProfile:
        if not all(math.isfinite(e) for e in self.edges):
            raise ValueError(f"feature {self.name!r}: edges must be finite")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"feature {self.name!r}: edges must increase")
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"feature {self.name!r}: counts need one more entry than edges")
        if any(c is not None and not 0 <= c <= MAX_PROFILE_COUNT for c in self.counts):
            raise ValueError(f"feature {self.name!r}: a count is out of range")
        return self


class SiteProfile(_Frozen):
    """A hospital's profile of its training split, as it shares it."""

    min_count: int = Field(ge=1, le=1_000_000)
    """The floor it applied: every shown count is 0 or at least this."""
    features: list[FeatureProfile] = Field(max_length=10_000)

    @model_validator(mode="after")
    def _over_the_floor(self) -> SiteProfile:
        for feature in self.features:
            shown = [c for c in (*feature.counts, feature.missing) if c is not None]
            if any(0 < c < self.min_count for c in shown):
                raise ValueError(
                    f"feature {feature.name!r}: a count under the floor of {self.min_count}"
                )
        return self


def site_profile(x: npt.NDArray[np.floating], schema: FeatureSchema, min_count: int) -> SiteProfile:
    """The profile of one hospital's rows ``x`` (columns in schema order), floor applied."""
    if x.shape[1] != len(schema.features):
        raise ValueError(f"{x.shape[1]} columns for {len(schema.features)} schema features")
    rows = int(x.shape[0])
    features = []
    for column, feature in enumerate(schema.features):
        values = x[:, column]
        edges = profile_edges(feature)
        counts = bin_counts(values, edges)
        hidden = withheld_cells(counts, min_count)
        missing = int(np.isnan(values).sum())
        present = rows - missing
        missing_shown = not (0 < missing < min_count or 0 < present < min_count)
        features.append(
            FeatureProfile(
                name=feature.name,
                edges=list(edges),
                counts=[None if i in hidden else c for i, c in enumerate(counts)],
                missing=missing if missing_shown else None,
            )
        )
    return SiteProfile(min_count=min_count, features=features)


class PooledFeature(_Frozen):
    """One feature summed over the hospitals that binned it on the federation's edges."""

    name: str
    edges: list[float]
    counts: list[int]
    """Per bin: the sum of the counts the hospitals showed."""
    withheld_by: list[list[str]]
    """Per bin: the hospitals that withheld theirs (under the floor), not in ``counts``."""
    missing: dict[str, int | None]
    """Per hospital: rows without a value (None: withheld under the floor)."""
    present: dict[str, int]
    """Per hospital: rows with a value."""
    left_out: dict[str, str]
    """Hospitals whose profile of this feature could not be added, and why."""


class PooledProfile(_Frozen):
    sites: list[str]
    features: list[PooledFeature]


def common_names(profiles: Mapping[str, SiteProfile]) -> tuple[str, ...]:
    """The feature names most hospitals profiled (ties: the first in sorted order)."""
    votes: dict[tuple[str, ...], int] = {}
    for profile in profiles.values():
        names = tuple(f.name for f in profile.features)
        votes[names] = votes.get(names, 0) + 1
    return max(sorted(votes), key=lambda n: votes[n]) if votes else ()


def pool_profiles(
    profiles: Mapping[str, SiteProfile],
    present: Mapping[str, Sequence[float]],
    names: Sequence[str],
) -> PooledProfile:
    """Add the hospitals' profiles of the features ``names`` bin by bin.

    ``present[site][i]``: rows with a value of feature ``i`` at that hospital (its moments
    count). A feature's edges are the ones most hospitals used; a hospital that binned it
    otherwise, or did not profile it, is left out of that feature and named.
    """
    sites = sorted(profiles)
    pooled = []
    for name in names:
        entries = {
            site: (index, feature)
            for site in sites
            for index, feature in enumerate(profiles[site].features)
            if feature.name == name
        }
        votes: dict[tuple[float, ...], int] = {}
        for _, feature in entries.values():
            votes[tuple(feature.edges)] = votes.get(tuple(feature.edges), 0) + 1
        edges = max(sorted(votes), key=lambda e: votes[e]) if votes else ()
        counts = [0] * (len(edges) + 1) if edges else []
        withheld: list[list[str]] = [[] for _ in counts]
        missing: dict[str, int | None] = {}
        rows: dict[str, int] = {}
        left_out = {s: "did not profile this feature" for s in sites if s not in entries}
        for site, (index, feature) in entries.items():
            if tuple(feature.edges) != edges:
                left_out[site] = "binned on other edges (another feature schema)"
                continue
            for b, count in enumerate(feature.counts):
                if count is None:
                    withheld[b].append(site)
                else:
                    counts[b] += count
            missing[site] = feature.missing
            rows[site] = int(present[site][index])
        pooled.append(
            PooledFeature(
                name=name,
                edges=list(edges),
                counts=counts,
                withheld_by=withheld,
                missing=missing,
                present=rows,
                left_out=left_out,
            )
        )
    return PooledProfile(sites=sites, features=pooled)
