"""A data profile inside a moments report, as the aggregator and ``fedsilo data profile``
read it: valid, or the report refused with a named reason; never a crash."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fl_client.moments import moments_report
from fl_core.data.base import SiteData, Split
from fl_core.data.profile import common_names, pool_profiles
from fl_core.exchange.protocol import _dump
from fl_server.moments import check_moments
from tests.hostile import FUZZ, HOSTILE_NUMBERS, dumps, hostile_documents, only_named_rejections

NAMES = ("age", "lactate", "male")
REASONS = frozenset(
    {"malformed_moments", "malformed_profile", "too_large", "site_mismatch", "shape_mismatch",
     "non_finite", "out_of_range"}
)  # fmt: skip


def _report() -> bytes:
    rng = np.random.default_rng(0)
    x = np.column_stack(
        [rng.normal(60, 15, 90), rng.lognormal(0.5, 0.4, 90), rng.random(90) < 0.5]
    ).astype(np.float32)
    x[::7, 1] = np.nan
    y = np.zeros(90, dtype=np.int8)
    empty = Split(x[:0], y[:0])
    return _dump(moments_report("test", SiteData("site-a", NAMES, Split(x, y), empty, empty)))


REPORT = _report()


def check(data: bytes) -> None:
    with only_named_rejections(REASONS):
        report, _ = check_moments(data, "site-a", "test", len(NAMES), 10_000)
        if report.profile is not None:  # what passed can be pooled
            profiles = {"site-a": report.profile}
            pooled = pool_profiles(profiles, {"site-a": report.count}, common_names(profiles))
            assert all(c >= 0 for f in pooled.features for c in f.counts)


@FUZZ
@given(hostile_documents(REPORT))
def test_hostile_reports_with_a_profile(data: bytes) -> None:
    check(data)


@FUZZ
@given(
    st.integers(min_value=0, max_value=2),
    st.sampled_from(["counts", "edges", "missing", "name"]),
    st.one_of(HOSTILE_NUMBERS, st.lists(HOSTILE_NUMBERS, max_size=70), st.text(max_size=300)),
)
def test_hostile_values_in_every_profile_field(feature: int, field: str, value: object) -> None:
    document = json.loads(REPORT)
    document["profile"]["features"][feature][field] = value
    check(dumps(document))
