"""The compiled multiply-add gives numpy's bytes, finds every non-finite value, and stays out of
processes whose models are small."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fl_core import aggregation, compiled_sum
from fl_core.aggregation import COMPILED_MIN_ELEMENTS, StreamingWeightedMean
from fl_core.errors import AggregationError, NonFiniteUpdateError
from fl_core.serialisation import TensorSpec


def _updates(dtype: str, count: int, seed: int) -> list[tuple[dict[str, np.ndarray], float]]:
    """Large enough for the compiled loop, spread over magnitudes, with an int64 tensor and a
    float16 one beside (numpy's path) and a short tensor that a span boundary may cut."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        scale = 10.0 ** rng.integers(-6, 6)
        update = {
            "big": (rng.standard_normal(COMPILED_MIN_ELEMENTS + 1031) * scale).astype(dtype),
            "steps": rng.integers(0, 1000, size=3, dtype=np.int64),
            "half": rng.standard_normal(17).astype(np.float16),
            "tail": rng.standard_normal((13, 11)).astype(dtype),
        }
        out.append((update, float(rng.integers(1, 20_000))))
    return out


def _specs(update: dict[str, np.ndarray]) -> dict[str, TensorSpec]:
    return {k: TensorSpec(str(a.dtype), a.shape) for k, a in update.items()}


def _mean_bytes(updates, threads: int) -> dict[str, bytes]:
    mean = StreamingWeightedMean(_specs(updates[0][0]), threads=threads)
    for update, weight in updates:
        mean.add(update, weight)
    return {k: v.tobytes() for k, v in mean.result().items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_compiled_loop_gives_numpys_bytes_on_any_thread_count(dtype, monkeypatch):
    updates = _updates(dtype, 7, seed=11)
    for update, _ in updates[::2]:  # read-only buffers, as updates decoded from a file are
        for array in update.values():
            array.flags.writeable = False
    compiled = _mean_bytes(updates, threads=1)
    assert StreamingWeightedMean(_specs(updates[0][0]))._compiled is not None
    for threads in (2, 3):
        assert _mean_bytes(updates, threads=threads) == compiled
    monkeypatch.setattr(aggregation, "COMPILED_MIN_ELEMENTS", 1 << 62)
    assert StreamingWeightedMean(_specs(updates[0][0]))._compiled is None
    assert _mean_bytes(updates, threads=1) == compiled
    assert _mean_bytes(updates, threads=2) == compiled


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, COMPILED_MIN_ELEMENTS // 2 + 3, -1])
def test_every_non_finite_value_is_found_wherever_it_is(dtype, bad, where):
    update, weight = _updates(dtype, 1, seed=5)[0]
    specs = _specs(update)
    update["big"][where] = bad
    for threads in (1, 2):
        mean = StreamingWeightedMean(specs, threads=threads)
        assert mean._compiled is not None
        with pytest.raises(NonFiniteUpdateError, match="big holds NaN or Inf"):
            mean.add(update, weight)
        with pytest.raises(AggregationError, match="begin the round again"):
            mean.result()


def test_a_float64_value_that_overflows_when_weighted_is_refused_and_one_that_does_not_is_kept():
    update, _ = _updates("float64", 1, seed=9)[0]
    update["big"][123] = 1e307
    mean = StreamingWeightedMean(_specs(update))
    mean.add(update, 5.0)  # 5e307 is finite
    assert np.isfinite(mean.result()["big"]).all()
    with pytest.raises(NonFiniteUpdateError):
        StreamingWeightedMean(_specs(update)).add(update, 50.0)  # 5e308 is not


def test_the_kernel_alone_adds_a_range_and_flags_only_that_range():
    kernel = compiled_sum.compiled_multiply_add()
    total = np.zeros(10)
    update = np.arange(10, dtype=np.float32)
    update[0] = np.nan  # outside the range added
    assert kernel(total, update, 2.0, 3, 7) is False
    np.testing.assert_array_equal(total, [0, 0, 0, 6, 8, 10, 12, 0, 0, 0])
    assert kernel(total, update, 2.0, 0, 2) is True


def test_a_small_model_never_imports_numba():
    """numba's start-up is paid only where the loop repays it: not by the eICU-size model."""
    script = (
        "import sys, numpy as np\n"
        "from fl_core.aggregation import weighted_mean\n"
        "small = np.ones(10_000, np.float32)\n"
        "weighted_mean([({'w': small}, 3), ({'w': small * 0}, 1)])\n"
        "assert 'numba' not in sys.modules, 'numba imported for a small model'\n"
        "weighted_mean([({'w': np.ones(1 << 18, np.float32)}, 1)])\n"
        "assert 'numba' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_after_prepare_no_update_compiles_the_loop_again():
    """Every kind of update a round hands over was compiled before the round: read-only and
    writable, float32 and float64, at any offset in its buffer (a safetensors payload starts
    wherever its header ends)."""
    compiled_sum.prepare()
    kernel = compiled_sum.compiled_multiply_add()
    compiled = len(kernel.signatures)  # type: ignore[attr-defined]
    total = np.zeros(3)
    for dtype in compiled_sum.COMPILED_DTYPES:
        for offset in (0, 1, 3):
            buffer = bytearray(dtype.itemsize * 3 + offset)
            for writeable in (True, False):
                update = np.frombuffer(buffer, dtype=dtype, count=3, offset=offset)
                update.flags.writeable = writeable
                assert kernel(total, update, 2.0, 0, 3) is False
    assert len(kernel.signatures) == compiled  # type: ignore[attr-defined]


def test_a_whole_number_weight_uses_the_prepared_loop():
    """A caller's int weight (a hospital's example count) is summed by a loop compiled before
    the round, not one compiled in the middle of it."""
    spec = TensorSpec(dtype="float32", shape=(COMPILED_MIN_ELEMENTS,))
    mean = StreamingWeightedMean({"w": spec})
    kernel = compiled_sum.compiled_multiply_add()
    compiled = len(kernel.signatures)  # type: ignore[attr-defined]
    mean.add({"w": np.ones(COMPILED_MIN_ELEMENTS, np.float32)}, 3)
    mean.add({"w": np.zeros(COMPILED_MIN_ELEMENTS, np.float32)}, 1)
    assert len(kernel.signatures) == compiled  # type: ignore[attr-defined]
    np.testing.assert_array_equal(mean.result()["w"], np.full(COMPILED_MIN_ELEMENTS, 0.75))
