import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl_core.aggregation import StreamingWeightedMean, weighted_mean
from fl_core.errors import AggregationError
from fl_core.serialization import TensorSpec

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
