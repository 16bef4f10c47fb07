import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl_core.aggregation import StreamingWeightedMean, weighted_mean
from fl_core.errors import AggregationError
from fl_core.serialisation import TensorSpec

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
vectors = arrays(np.float32, 6, elements=finite)


@given(st.lists(st.tuples(vectors, st.integers(1, 10**4)), min_size=1, max_size=8), st.randoms())
@settings(max_examples=60, deadline=None)
def test_order_does_not_matter(updates, rnd):
    shuffled = list(updates)
    rnd.shuffle(shuffled)
    a = weighted_mean([({"w": x}, n) for x, n in updates])["w"]
    b = weighted_mean([({"w": x}, n) for x, n in shuffled])["w"]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-4)


@given(vectors, st.integers(1, 10**4), st.integers(1, 10**4))
@settings(max_examples=60, deadline=None)
def test_identical_updates_unchanged(x, n1, n2):
    out = weighted_mean([({"w": x}, n1), ({"w": x}, n2)])
    np.testing.assert_allclose(out["w"], x, rtol=1e-6, atol=1e-4)
    assert out["w"].dtype == np.float32


@given(st.lists(st.tuples(vectors, st.integers(1, 10**4)), min_size=1, max_size=8))
@settings(max_examples=60, deadline=None)
def test_weights_respected_matches_numpy_average(updates):
    out = weighted_mean([({"w": x}, n) for x, n in updates])["w"]
    expected = np.average(
        np.stack([x.astype(np.float64) for x, _ in updates]),
        axis=0,
        weights=[n for _, n in updates],
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)


def test_mean_within_coordinate_extremes():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=100).astype(np.float32) for _ in range(7)]
    out = weighted_mean([({"w": x}, i + 1) for i, x in enumerate(xs)])["w"]
    stack = np.stack(xs)
    assert np.all(out <= stack.max(axis=0) + 1e-6) and np.all(out >= stack.min(axis=0) - 1e-6)


def test_streaming_refuses_bad_input():
    mean = StreamingWeightedMean({"w": TensorSpec("float32", (2,))})
    with pytest.raises(AggregationError):
        mean.result()
    with pytest.raises(AggregationError):
        mean.add({"w": np.ones(2, np.float32)}, 0)
    with pytest.raises(AggregationError):
        mean.add({"v": np.ones(2, np.float32)}, 1)
    with pytest.raises(AggregationError):
        weighted_mean([])


def test_updates_larger_than_a_slice_are_summed_whole():
    """Adding slice by slice covers every element, including a short last slice."""
    from fl_core.aggregation import CHUNK_ELEMENTS

    rng = np.random.default_rng(7)
    shape = (3, CHUNK_ELEMENTS // 2 + 5)  # 1.5 slices and a few elements
    updates = [({"w": rng.random(shape, np.float32), "b": rng.random(3)}, n) for n in (3, 11)]
    out = weighted_mean(updates)
    for name in ("w", "b"):
        expected = np.average([u[name] for u, _ in updates], axis=0, weights=[3, 11])
        assert out[name].shape == expected.shape
        np.testing.assert_allclose(out[name], expected, rtol=1e-6)


def _big_updates(count: int, seed: int = 3) -> list[tuple[dict[str, np.ndarray], int]]:
    """Updates of three tensors, spans crossing tensors and short last slices included."""
    from fl_core.aggregation import CHUNK_ELEMENTS

    rng = np.random.default_rng(seed)
    shapes = {"a": (CHUNK_ELEMENTS * 3 + 11,), "b": (7, 5), "c": (2, CHUNK_ELEMENTS + 3)}
    return [
        (
            {
                k: (rng.normal(size=s) * 10.0 ** rng.integers(-3, 3)).astype(np.float32)
                for k, s in shapes.items()
            },
            int(rng.integers(1, 5000)),
        )
        for _ in range(count)
    ]


def _specs(update: dict[str, np.ndarray]) -> dict[str, TensorSpec]:
    return {k: TensorSpec(str(a.dtype), a.shape) for k, a in update.items()}


def _sum_bytes(updates, threads: int, resume_after: int | None = None) -> dict[str, bytes]:
    """The mean's bytes; ``resume_after``: a fresh mean re-adds the first updates in their
    recorded order (as a resumed round replays its admitted updates), then the rest."""
    mean = StreamingWeightedMean(_specs(updates[0][0]), threads=threads)
    for x, n in updates[:resume_after]:
        mean.add(x, float(n))
    if resume_after is not None:
        mean = StreamingWeightedMean(_specs(updates[0][0]), threads=threads)
        for x, n in updates:
            mean.add(x, float(n))
    return {k: v.tobytes() for k, v in mean.result().items()}


def test_the_sum_is_the_same_bytes_on_any_thread_count_twice_and_resumed():
    updates = _big_updates(6)
    reference = _sum_bytes(updates, threads=1)
    assert _sum_bytes(updates, threads=1) == reference
    for threads in (2, 3, 4):
        assert _sum_bytes(updates, threads=threads) == reference
    assert _sum_bytes(updates, threads=3, resume_after=4) == reference


def test_the_sum_is_within_1e6_relative_of_float64():
    updates = _big_updates(12, seed=5)
    out = weighted_mean(updates)
    for name in updates[0][0]:
        stack = np.stack([x[name].astype(np.float64) for x, _ in updates])
        exact = np.average(stack, axis=0, weights=[float(n) for _, n in updates])
        # the float32 result itself rounds: compare against float64 rounded to float32 too
        np.testing.assert_allclose(out[name], exact, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(out[name], exact.astype(np.float32))


def test_spans_cover_every_element_once_in_order():
    from fl_core.aggregation import CHUNK_ELEMENTS, split_spans

    sizes = {"a": CHUNK_ELEMENTS * 5 + 3, "b": 4, "c": CHUNK_ELEMENTS * 2}
    for parts in (1, 2, 3, 4, 7):
        shares = split_spans(sizes, parts)
        assert 1 <= len(shares) <= parts
        covered = [span for share in shares for span in share]
        for name, size in sizes.items():
            ranges = [(start, stop) for n, start, stop in covered if n == name]
            assert ranges[0][0] == 0 and ranges[-1][1] == size
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_a_non_finite_value_is_found_in_the_slice_that_holds_it_and_voids_the_sum():
    from fl_core.aggregation import CHUNK_ELEMENTS
    from fl_core.errors import NonFiniteUpdateError

    size = CHUNK_ELEMENTS * 3
    mean = StreamingWeightedMean({"w": TensorSpec("float32", (size,))}, threads=1)
    mean.add({"w": np.ones(size, np.float32)}, 2.0)
    for bad in (np.nan, np.inf, -np.inf):
        poisoned = np.ones(size, np.float32)
        poisoned[CHUNK_ELEMENTS * 2 + 7] = bad  # the third slice: two were added before it
        with pytest.raises(NonFiniteUpdateError, match="w holds NaN or Inf"):
            StreamingWeightedMean({"w": TensorSpec("float32", (size,))}).add({"w": poisoned}, 1)
    with pytest.raises(NonFiniteUpdateError):
        mean.add({"w": poisoned}, 1.0)
    with pytest.raises(AggregationError, match="begin the round again"):
        mean.result()
    with pytest.raises(AggregationError, match="begin the round again"):
        mean.add({"w": np.ones(size, np.float32)}, 1.0)


def test_finite_float64_values_whose_slice_sum_overflows_are_not_refused():
    huge = np.full(8, 1e308)
    out = weighted_mean([({"w": huge}, 1)])
    np.testing.assert_array_equal(out["w"], huge)
