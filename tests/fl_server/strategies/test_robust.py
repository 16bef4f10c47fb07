"""Property tests of the robust rules (median, trimmed mean, Krum, Multi-Krum, norm-bounded),
and proof that the spooled rules never hold every update in memory at once."""

from __future__ import annotations

import math
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl_core.aggregation import weighted_mean
from fl_core.config import load_config
from fl_core.errors import AggregationError, ConfigError
from fl_core.privacy.mechanisms import delta_norm
from fl_core.robust_aggregation import coordinate_median, trimmed_mean_rule
from fl_server.strategies import build_aggregator
from fl_server.strategies.norm_bounded import NormBoundedAggregator
from fl_server.strategies.robust import CoordinateWiseAggregator, KrumAggregator
from fl_server.strategies.spool import block_indices

from .helpers import admitted, aggregate, assert_models_close

SHAPES = {"w": (3, 4), "b": (5,), "s": ()}
GLOBAL = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

finite = st.floats(-1e3, 1e3, width=32, allow_nan=False, allow_infinity=False)


@st.composite
def models(draw: st.DrawFn) -> dict[str, np.ndarray]:
    return {
        name: draw(arrays(np.float32, shape, elements=finite)) for name, shape in SHAPES.items()
    }


@st.composite
def update_sets(draw: st.DrawFn, min_size: int = 1, max_size: int = 7) -> list:
    chosen = draw(st.lists(models(), min_size=min_size, max_size=max_size))
    counts = draw(st.lists(st.integers(1, 10_000), min_size=len(chosen), max_size=len(chosen)))
    return [(f"site-{i:02d}", m, n) for i, (m, n) in enumerate(zip(chosen, counts, strict=True))]


def rules(chunk: int) -> dict[str, object]:
    return {
        "median": lambda: CoordinateWiseAggregator(coordinate_median, chunk),
        "trimmed_mean": lambda: CoordinateWiseAggregator(trimmed_mean_rule(0.2), chunk),
        "multikrum": lambda: KrumAggregator(0, chunk, multi=True),
    }


COORDINATE = ["median", "trimmed_mean"]


def make(name: str, chunk: int = 5):
    return rules(chunk)[name]()  # type: ignore[operator]


# ---- order invariance and identical updates -----------------------------------------------


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "multikrum"])
@SETTINGS
@given(updates=update_sets(min_size=3), data=st.data())
def test_spooled_rules_ignore_arrival_order(name, updates, data):
    order = data.draw(st.permutations(range(len(updates))))
    first = aggregate(make(name), GLOBAL, updates)
    second = aggregate(make(name), GLOBAL, [updates[i] for i in order])
    for key in first:  # updates are read back in site_id order: bitwise equal
        np.testing.assert_array_equal(first[key], second[key])


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "multikrum"])
@SETTINGS
@given(model=models(), counts=st.lists(st.integers(1, 10_000), min_size=3, max_size=7))
def test_identical_updates_give_that_update_back(name, model, counts):
    updates = [(f"site-{i}", model, n) for i, n in enumerate(counts)]
    assert_models_close(aggregate(make(name), GLOBAL, updates), model, rtol=1e-6, atol=1e-4)


@SETTINGS
@given(model=models(), counts=st.lists(st.integers(1, 10_000), min_size=5, max_size=7))
def test_krum_of_identical_updates_is_that_update(model, counts):
    updates = [(f"site-{i}", model, n) for i, n in enumerate(counts)]
    out = aggregate(KrumAggregator(1, 4, multi=False), GLOBAL, updates)
    for key in model:
        np.testing.assert_array_equal(out[key], model[key])


# ---- coordinate bounds and chunking ---------------------------------------------------------


@pytest.mark.parametrize("name", COORDINATE)
@SETTINGS
@given(updates=update_sets())
def test_median_and_trimmed_mean_within_coordinate_extremes(name, updates):
    out = aggregate(make(name), GLOBAL, updates)
    for key in SHAPES:
        stacked = np.stack([m[key] for _, m, _ in updates])
        assert (out[key] >= stacked.min(axis=0)).all()
        assert (out[key] <= stacked.max(axis=0)).all()


@pytest.mark.parametrize("name", COORDINATE)
@SETTINGS
@given(updates=update_sets(), chunk=st.integers(1, 30))
def test_result_does_not_depend_on_chunk_size(name, updates, chunk):
    whole = aggregate(make(name, chunk=10**6), GLOBAL, updates)
    chunked = aggregate(make(name, chunk=chunk), GLOBAL, updates)
    for key in whole:
        np.testing.assert_array_equal(whole[key], chunked[key])


def test_median_and_trimmed_mean_match_numpy():
    rng = np.random.default_rng(0)
    stacked = rng.normal(size=(7, 3, 4)).astype(np.float32)
    updates = [(f"site-{i}", {"w": stacked[i]}, 10) for i in range(7)]
    start = {"w": np.zeros((3, 4), np.float32)}
    median = aggregate(CoordinateWiseAggregator(coordinate_median, 5), start, updates)
    np.testing.assert_allclose(median["w"], np.median(stacked, axis=0), rtol=1e-6)
    trimmed = aggregate(CoordinateWiseAggregator(trimmed_mean_rule(0.2), 5), start, updates)
    ordered = np.sort(stacked.astype(np.float64), axis=0)[1:6]  # 1 dropped each end
    np.testing.assert_allclose(trimmed["w"], ordered.mean(axis=0), rtol=1e-6)


@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple),
    limit=st.integers(1, 50),
)
def test_blocks_cover_every_element_once_within_the_limit(shape, limit):
    seen = np.zeros(shape, np.int64)
    for index in block_indices(shape, limit):
        view = seen[index]
        assert view.size <= limit or len(shape) == 0
        seen[index] += 1
    assert (seen == 1).all()


# ---- weights -------------------------------------------------------------------------------


@SETTINGS
@given(updates=update_sets(min_size=2))
def test_multikrum_keeping_everyone_is_fedavg(updates):
    out = aggregate(KrumAggregator(0, 7, multi=True, selected=len(updates)), GLOBAL, updates)
    expected = weighted_mean([(m, n) for _, m, n in updates])
    assert_models_close(out, expected, rtol=1e-5, atol=1e-3)


@SETTINGS
@given(updates=update_sets(min_size=2))
def test_trimmed_mean_without_trimming_is_fedavg(updates):
    out = aggregate(CoordinateWiseAggregator(trimmed_mean_rule(0.0), 4), GLOBAL, updates)
    expected = weighted_mean([(m, n) for _, m, n in updates])
    assert_models_close(out, expected, rtol=1e-5, atol=1e-3)


@SETTINGS
@given(honest=update_sets(min_size=3, max_size=6), data=st.data())
def test_trimmed_mean_stays_in_the_honest_range_whatever_examples_are_claimed(honest, data):
    """k hostile updates with absurd values and num_examples cannot leave the honest range."""
    k = data.draw(st.integers(1, 2))
    hostile = [
        (f"site-h{i}", data.draw(models()), data.draw(st.sampled_from([1, 10**7])))
        for i in range(k)
    ]
    updates = honest + hostile
    fraction = (k + 0.5) / len(updates)  # floor(fraction * n) == k
    if fraction >= 0.5:
        return
    out = aggregate(CoordinateWiseAggregator(trimmed_mean_rule(fraction), 4), GLOBAL, updates)
    for key in SHAPES:
        stacked = np.stack([m[key] for _, m, _ in honest]).astype(np.float64)
        assert (out[key] >= stacked.min(axis=0) - 1e-3).all()
        assert (out[key] <= stacked.max(axis=0) + 1e-3).all()


@SETTINGS
@given(updates=update_sets(min_size=2))
def test_norm_bounded_with_a_loose_bound_is_fedavg_and_respects_weights(updates):
    out = aggregate(NormBoundedAggregator(clip_norm=1e9), GLOBAL, updates)
    expected = weighted_mean([(m, n) for _, m, n in updates])
    assert_models_close(out, expected, rtol=1e-5, atol=1e-3)


@SETTINGS
@given(updates=update_sets(min_size=2), data=st.data())
def test_norm_bounded_order_invariant_and_moves_at_most_clip_norm(updates, data):
    clip = data.draw(st.floats(0.01, 100.0))
    order = data.draw(st.permutations(range(len(updates))))
    first = aggregate(NormBoundedAggregator(clip), GLOBAL, updates)
    second = aggregate(NormBoundedAggregator(clip), GLOBAL, [updates[i] for i in order])
    assert_models_close(first, second, rtol=1e-6, atol=1e-6)
    moved = delta_norm(update=first, reference=GLOBAL)
    assert moved <= clip * (1 + 1e-5) + 1e-6  # a mean of clipped deltas


@SETTINGS
@given(model=models(), counts=st.lists(st.integers(1, 10_000), min_size=1, max_size=5))
def test_norm_bounded_identical_small_updates_come_back(model, counts):
    norm = delta_norm(update=model, reference=GLOBAL)
    out = aggregate(
        NormBoundedAggregator(norm + 1.0),
        GLOBAL,
        [(f"s{i}", model, n) for i, n in enumerate(counts)],
    )
    assert_models_close(out, model, rtol=1e-6, atol=1e-4)


def test_norm_bounded_clips_a_large_delta_to_the_bound():
    start = {"w": np.zeros(4, np.float32)}
    big = {"w": np.array([30.0, 40.0, 0.0, 0.0], np.float32)}  # norm 50
    out = aggregate(NormBoundedAggregator(5.0), start, [("site-a", big, 10)])
    np.testing.assert_allclose(out["w"], [3.0, 4.0, 0.0, 0.0], rtol=1e-6)


# ---- Krum keeps the honest ------------------------------------------------------------------


@st.composite
def attacked(draw: st.DrawFn):
    """n honest updates near a centre and f < (n - 2) / 2 hostile ones, in any order."""
    byzantine = draw(st.integers(0, 3))
    honest_count = draw(st.integers(byzantine + 3, byzantine + 6))  # n = h + f > 2f + 2
    centre = draw(arrays(np.float32, (6,), elements=st.floats(-100, 100, width=32)))
    honest = [
        centre + draw(arrays(np.float32, (6,), elements=st.floats(-1, 1, width=32)))
        for _ in range(honest_count)
    ]
    far = st.floats(50, 1e3, width=32)
    hostile = []
    for _ in range(byzantine):
        signs = draw(arrays(np.int8, (6,), elements=st.sampled_from([-1, 1])))
        offset = draw(arrays(np.float32, (6,), elements=far))
        hostile.append(centre + signs * offset)
    # colluding attackers may also all send the same update
    if byzantine > 1 and draw(st.booleans()):
        hostile = [hostile[0]] * byzantine
    labelled = [("honest", w) for w in honest] + [("hostile", w) for w in hostile]
    order = draw(st.permutations(range(len(labelled))))
    updates = []
    kinds = {}
    for position, index in enumerate(order):
        kind, weights = labelled[index]
        site = f"site-{position:02d}"
        kinds[site] = kind
        updates.append((site, {"w": weights.astype(np.float32)}, draw(st.integers(1, 1000))))
    return byzantine, updates, kinds


@SETTINGS
@given(case=attacked(), multi=st.booleans())
def test_krum_selects_only_honest_updates_below_the_bound(case, multi):
    byzantine, updates, kinds = case
    aggregator = KrumAggregator(byzantine, 4, multi=multi)
    out = aggregate(aggregator, {"w": np.zeros(6, np.float32)}, updates)
    assert aggregator.selected_sites
    assert len(aggregator.selected_sites) == (len(updates) - byzantine if multi else 1)
    assert all(kinds[site] == "honest" for site in aggregator.selected_sites)
    honest = np.stack([m["w"] for site, m, _ in updates if kinds[site] == "honest"])
    assert (out["w"] >= honest.min(axis=0) - 1e-3).all()
    assert (out["w"] <= honest.max(axis=0) + 1e-3).all()


def test_krum_refuses_too_few_updates_for_its_bound():
    updates = [(f"site-{i}", {"w": np.full(2, i, np.float32)}, 1) for i in range(4)]
    with pytest.raises(AggregationError, match="needs at least 5 accepted updates"):
        aggregate(KrumAggregator(1, 4, multi=False), {"w": np.zeros(2, np.float32)}, updates)


def test_krum_config_needs_quorum_above_twice_the_hostile():
    config = load_config(
        overrides={"strategy": {"name": "krum", "byzantine": 2}, "round.min_sites": 6}
    )
    with pytest.raises(ConfigError, match=r"round.min_sites >= 7"):
        build_aggregator(config)
    ok = load_config(overrides={"strategy": {"name": "krum", "byzantine": 2}, "round.min_sites": 7})
    assert isinstance(build_aggregator(ok), KrumAggregator)


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "median", "chunk_elements": 3},
        {"name": "trimmed_mean", "trim_fraction": 0.1},
        {"name": "krum", "byzantine": 0},
        {"name": "multikrum", "byzantine": 0, "selected": 2},
        {"name": "norm_bounded", "clip_norm": 2.0},
    ],
)
def test_every_robust_rule_is_built_from_config(strategy):
    config = load_config(overrides={"strategy": strategy, "round.min_sites": 3})
    aggregator = build_aggregator(config)
    updates = [(f"site-{i}", {"w": np.full(3, 0.1 * i, np.float32)}, 5) for i in range(3)]
    out = aggregate(aggregator, {"w": np.zeros(3, np.float32)}, updates)
    assert out["w"].shape == (3,) and np.isfinite(out["w"]).all()


# ---- spool: memory and clean-up -------------------------------------------------------------


def _spool_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("fedsilo-spool-*"))


def test_spool_is_removed_after_finish_and_on_a_fresh_round(tmp_path):
    aggregator = CoordinateWiseAggregator(coordinate_median, 4, spool_dir=str(tmp_path))
    start = {"w": np.zeros(3, np.float32)}
    aggregator.begin_round(1, start)
    aggregator.add_admitted(admitted("site-a", {"w": np.ones(3, np.float32)}, 3))
    assert len(list(_spool_dirs(tmp_path)[0].iterdir())) == 1
    aggregator.begin_round(1, start)  # a restarted round: the old files go
    assert len(_spool_dirs(tmp_path)) == 1
    assert list(_spool_dirs(tmp_path)[0].iterdir()) == []
    aggregator.add_admitted(admitted("site-a", {"w": np.ones(3, np.float32)}, 3))
    aggregator.finish()
    assert _spool_dirs(tmp_path) == []


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum", "multikrum"])
def test_spooled_rules_never_hold_all_updates_in_memory(name, tmp_path):
    """12 updates of 16 MiB each with 64 Ki-element chunks: holding them all would need
    192 MiB; the aggregator's peak stays near one model (its output) plus small chunks."""
    parameters = 4 * 1024 * 1024
    sites = 12
    model_bytes = parameters * 4
    chunk = 64 * 1024
    aggregator = {
        "median": lambda: CoordinateWiseAggregator(coordinate_median, chunk, str(tmp_path)),
        "trimmed_mean": lambda: CoordinateWiseAggregator(
            trimmed_mean_rule(0.2), chunk, str(tmp_path)
        ),
        "krum": lambda: KrumAggregator(2, chunk, multi=False, spool_dir=str(tmp_path)),
        "multikrum": lambda: KrumAggregator(2, chunk, multi=True, spool_dir=str(tmp_path)),
    }[name]()
    rng = np.random.default_rng(0)
    start = {"w": np.zeros(parameters, np.float32)}
    tracemalloc.start()
    try:
        aggregator.begin_round(1, start)
        for i in range(sites):
            update = admitted(
                f"site-{i:02d}", {"w": rng.standard_normal(parameters, np.float32)}, 1
            )
            before = sys.getrefcount(update.data)
            aggregator.add_admitted(update)
            after = sys.getrefcount(update.data)  # outside assert: its rewriting adds refs
            assert after == before  # the aggregator kept no reference to the bytes
            del update
        out = aggregator.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out["w"].shape == (parameters,)
    assert peak < 5 * model_bytes, f"peak {peak / 2**20:.0f} MiB"
    assert peak < sites * model_bytes / 2
    assert math.isfinite(float(out["w"][0]))
