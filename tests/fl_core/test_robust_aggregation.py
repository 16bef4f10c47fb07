"""Property tests of the robust rules as pure functions over one block of every update."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl_core import robust_aggregation as rules
from fl_core.errors import AggregationError, ConfigError

SETTINGS = settings(max_examples=60, deadline=None)
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def blocks(draw: st.DrawFn, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A ``(updates x elements)`` block and one positive ``num_examples`` per update."""
    n = draw(st.integers(min_rows, 7))
    k = draw(st.integers(1, 6))
    rows = draw(arrays(np.float64, (n, k), elements=finite))
    counts = draw(arrays(np.float64, n, elements=st.integers(1, 10_000).map(float)))
    return rows, counts


@SETTINGS
@given(block=blocks(), fraction=st.floats(0.0, 0.49), data=st.data())
def test_rules_are_order_invariant(block, fraction, data):
    rows, counts = block
    order = np.array(data.draw(st.permutations(range(rows.shape[0]))))
    for rule in (rules.coordinate_median, rules.weighted_rows_mean):
        np.testing.assert_allclose(
            rule(rows, counts), rule(rows[order], counts[order]), rtol=1e-12, atol=1e-9
        )
    # the trimmed mean breaks a tie between values of different weights by row order (the
    # aggregator always passes rows in site_id order); with equal weights order cannot matter
    equal = np.ones_like(counts)
    np.testing.assert_allclose(
        rules.trimmed_mean(rows, equal, trim_fraction=fraction),
        rules.trimmed_mean(rows[order], equal, trim_fraction=fraction),
        rtol=1e-12,
        atol=1e-9,
    )


@SETTINGS
@given(
    row=arrays(np.float64, 5, elements=finite),
    counts=st.lists(st.integers(1, 10_000), min_size=1, max_size=6),
    fraction=st.floats(0.0, 0.49),
)
def test_identical_updates_unchanged(row, counts, fraction):
    rows = np.tile(row, (len(counts), 1))
    weights = np.array(counts, np.float64)
    np.testing.assert_allclose(rules.coordinate_median(rows, weights), row, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(rules.weighted_rows_mean(rows, weights), row, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(
        rules.trimmed_mean(rows, weights, trim_fraction=fraction), row, rtol=1e-12, atol=1e-9
    )


@SETTINGS
@given(block=blocks(min_rows=3), fraction=st.floats(0.0, 0.49))
def test_trimmed_mean_stays_within_the_kept_range(block, fraction):
    rows, counts = block
    k = int(fraction * rows.shape[0])
    ordered = np.sort(rows, axis=0)
    low, high = ordered[k], ordered[rows.shape[0] - k - 1]
    out = rules.trimmed_mean(rows, counts, trim_fraction=fraction)
    assert np.all(out >= low - 1e-9) and np.all(out <= high + 1e-9)


def test_trimmed_mean_refuses_a_fraction_of_half_or_more():
    with pytest.raises(ConfigError, match="trim_fraction"):
        rules.trimmed_mean(np.zeros((3, 1)), np.ones(3), trim_fraction=0.5)


def test_a_rule_refuses_counts_that_do_not_match_the_rows():
    with pytest.raises(AggregationError, match="one per update"):
        rules.coordinate_median(np.zeros((3, 2)), np.ones(2))


@SETTINGS
@given(block=blocks(min_rows=2), cut=st.integers(1, 5))
def test_pairwise_distances_match_the_direct_sum_whatever_the_blocks(block, cut):
    rows, _ = block
    direct = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2)
    pieces = [rows[:, i : i + cut] for i in range(0, rows.shape[1], cut)]
    out = rules.pairwise_distances(iter(pieces), rows.shape[0])
    np.testing.assert_allclose(out, direct, rtol=1e-9, atol=1e-6)
    assert np.all(np.diag(out) == 0.0) and np.all(out >= 0.0)


@SETTINGS
@given(block=blocks(min_rows=5), data=st.data())
def test_krum_scores_follow_the_updates_when_reordered(block, data):
    rows, _ = block
    n = rows.shape[0]
    byzantine = data.draw(st.integers(0, (n - 3) // 2))
    order = np.array(data.draw(st.permutations(range(n))))
    distances = rules.pairwise_distances([rows], n)
    scores = rules.krum_scores(distances, byzantine)
    moved = rules.krum_scores(rules.pairwise_distances([rows[order]], n), byzantine)
    np.testing.assert_allclose(moved, scores[order], rtol=1e-9, atol=1e-6)


def test_krum_keeps_the_update_closest_to_its_peers():
    rows = np.array([[0.0], [0.1], [0.2], [0.3], [50.0]])
    scores = rules.krum_scores(rules.pairwise_distances([rows], 5), byzantine=1)
    assert rules.krum_select(scores, 1) == [1] or rules.krum_select(scores, 1) == [2]
    assert 4 not in rules.krum_select(scores, 4)


def test_krum_select_breaks_ties_by_position():
    assert rules.krum_select(np.array([1.0, 0.0, 0.0, 0.0]), 2) == [1, 2]


def test_krum_refuses_too_few_updates_for_its_byzantine_count():
    with pytest.raises(AggregationError, match="at least 5"):
        rules.krum_scores(np.zeros((4, 4)), byzantine=1)


def test_multikrum_keep_count_defaults_to_n_minus_f_and_checks_selected():
    assert rules.krum_keep_count(num_updates=7, byzantine=2, multi=True, selected=None) == 5
    assert rules.krum_keep_count(num_updates=7, byzantine=2, multi=False, selected=None) == 1
    with pytest.raises(AggregationError, match="between 1 and the 7"):
        rules.krum_keep_count(num_updates=7, byzantine=2, multi=True, selected=8)
