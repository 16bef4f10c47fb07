"""The aggregation benchmark runs end to end on a tiny grid and averages correctly.

No timing is asserted (the machine is shared); only that every measured row is a finite,
positive number and that what the benchmark times computes FedAvg, not something cheaper.
"""

import math
from pathlib import Path

import numpy as np
import pytest

from bench import aggregation
from bench.__main__ import discover_benchmarks
from fl_core.serialization import sha256_hex


def test_tiny_grid_gives_finite_positive_rows_and_cleans_up(tmp_path: Path) -> None:
    report = aggregation.run_grid([2, 3], [1_000], workdir=tmp_path, min_total_s=0.0)

    measured = [row for row in report.rows if row.gbps is not None]
    methods = {row.method for row in measured}
    assert {"fedsilo, files", "fedsilo + admission, files", "numpy f32 in place, in RAM"} <= methods
    for row in measured:
        assert row.gbps is not None and math.isfinite(row.gbps) and row.gbps > 0, row
    streamed = [row for row in measured if row.peak_rss_mb is not None]
    assert streamed
    for row in streamed:
        assert row.peak_rss_mb is not None and row.peak_rss_mb > 0, row
    hold_all = [row for row in report.rows if row.method == "Flower-style hold-all"]
    assert [row.peak_per_model for row in hold_all] == [2.0, 3.0]
    assert list(tmp_path.iterdir()) == []  # update files removed
    aggregation.render(report, "smoke")  # renders without error


@pytest.mark.parametrize("admit", [False, True])
def test_streamed_mean_equals_np_average(tmp_path: Path, admit: bool) -> None:
    updates = aggregation.write_updates(tmp_path, num_updates=5, num_params=1_003, seed=3)
    in_memory = aggregation.read_updates(updates, 5)
    weights = [n for _, n in in_memory]
    assert len({sha256_hex(w["layer0.weight"].tobytes()) for w, _ in in_memory}) == 5

    streamed = aggregation.stream_fedsilo(updates, 5, admit=admit)
    lean = aggregation.stream_lean(updates, 5, verify=admit, prefetch=admit)
    baseline = aggregation.accumulate_numpy(in_memory, np.float64)

    assert streamed.keys() == aggregation.tensor_sizes(1_003).keys()
    # float32 x Python float multiplies in float32 under NumPy 2 (NEP 50), in fedsilo and in
    # the baseline alike: each product is rounded to float32 before the float64 sum.
    for name, result in streamed.items():
        expected = np.average([w[name] for w, _ in in_memory], axis=0, weights=weights)
        for candidate in (result, lean[name], baseline[name]):
            np.testing.assert_allclose(
                np.asarray(candidate, dtype=np.float64), expected, rtol=1e-6, atol=1e-7
            )


def test_runner_discovers_the_aggregation_benchmark() -> None:
    assert "aggregation" in discover_benchmarks()


def test_scale_bench_put_probe_measures_and_cleans_up(tmp_path: Path) -> None:
    from bench import scale_bench

    cost = scale_bench.put_cost_us(tmp_path, objects=20)
    assert math.isfinite(cost) and cost > 0
    assert list(tmp_path.iterdir()) == []  # probe objects removed
