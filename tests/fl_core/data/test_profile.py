"""The data profile a hospital shares: fixed bins, and no count under its floor, even by
subtraction from the totals it already reports."""

from __future__ import annotations

import numpy as np
import pytest

from fl_core.data.eicu.features import feature_specs
from fl_core.data.feature_schema import (
    FeatureSchema,
    SchemaFeature,
    ValidRange,
    schema_from_names,
)
from fl_core.data.profile import (
    OPEN_EDGES,
    bin_counts,
    pool_profiles,
    profile_edges,
    site_profile,
    withheld_cells,
)


def test_kinds_from_names_agree_with_the_eicu_feature_set():
    specs = feature_specs()
    schema = schema_from_names(s.name for s in specs)
    assert [f.kind for f in schema.features] == [s.kind for s in specs]
    assert schema.features[0].valid_range == ValidRange(low=0.0, high=120.0)  # age


def test_edges_follow_kind_and_range():
    ranged = SchemaFeature(name="gcs", kind="numeric", valid_range=ValidRange(low=3, high=15))
    assert profile_edges(ranged) == pytest.approx(np.linspace(3.0, 15.0, 11))
    assert profile_edges(SchemaFeature(name="x", kind="numeric")) == OPEN_EDGES
    assert profile_edges(SchemaFeature(name="m", kind="indicator")) == (0.0, 0.5, 1.0)


def test_values_on_the_last_edge_fall_in_the_last_bin_and_outside_values_in_the_outer_bins():
    values = np.array([0.0, 1.0, 1.0, np.nan, -2.0, 7.0], dtype=np.float32)
    assert bin_counts(values, (0.0, 0.5, 1.0)) == [1, 1, 2, 1]


@pytest.mark.parametrize(
    ("counts", "floor", "withheld"),
    [
        ([0, 30, 40, 0], 10, set()),
        ([3, 30, 40, 0], 10, {0, 1}),  # one small cell would be recovered by subtraction
        ([3, 4, 40, 50], 10, {0, 1, 2}),  # two small cells: together still under the floor
        ([3, 9, 0, 0], 10, {0, 1}),
    ],
)
def test_withheld_cells_cannot_be_recovered(counts, floor, withheld):
    hidden = withheld_cells(counts, floor)
    assert hidden == withheld
    nonzero = {i for i, c in enumerate(counts) if c}
    if hidden and hidden != nonzero:
        assert len(hidden) >= 2 and sum(counts[i] for i in hidden) >= floor
    assert all(counts[i] >= floor for i in nonzero - hidden)


def _schema() -> FeatureSchema:
    return schema_from_names(("age", "lactate", "male"))


def test_no_shown_count_is_under_the_floor():
    rng = np.random.default_rng(0)
    x = np.column_stack(
        [rng.normal(60, 15, 57), rng.lognormal(0.5, 0.4, 57), rng.random(57) < 0.5]
    ).astype(np.float32)
    x[:4, 1] = np.nan
    profile = site_profile(x, _schema(), min_count=10)
    for feature in profile.features:
        shown = [c for c in (*feature.counts, feature.missing) if c is not None]
        assert all(c == 0 or c >= 10 for c in shown)
    lactate = profile.features[1]
    assert lactate.missing is None  # 4 missing rows: under the floor
    assert profile.features[0].missing == 0


def test_pooled_bins_are_the_sum_of_what_each_hospital_showed():
    rng = np.random.default_rng(1)
    xs = {
        f"site-{k}": np.column_stack(
            [rng.normal(60, 15, n), rng.lognormal(0.5, 0.4, n), rng.random(n) < 0.4]
        ).astype(np.float32)
        for k, n in (("a", 200), ("b", 120), ("c", 40))
    }
    profiles = {s: site_profile(x, _schema(), 10) for s, x in xs.items()}
    present = {s: (~np.isnan(x)).sum(axis=0).tolist() for s, x in xs.items()}
    pooled = pool_profiles(profiles, present, _schema().names())
    for index, feature in enumerate(pooled.features):
        edges = profile_edges(_schema().features[index])
        direct = {s: bin_counts(x[:, index], edges) for s, x in xs.items()}
        for b, count in enumerate(feature.counts):
            shown = [s for s in xs if s not in feature.withheld_by[b]]
            assert count == sum(direct[s][b] for s in shown)
            for site in feature.withheld_by[b]:
                assert direct[site][b] > 0
    assert any(any(w) for f in pooled.features for w in f.withheld_by)
