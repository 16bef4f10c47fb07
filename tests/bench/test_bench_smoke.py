"""The aggregation benchmark runs end to end on a tiny grid and averages correctly.

No timing is asserted (the machine is shared); only that every measured row is a finite,
positive number, that contenders are interleaved, and that what the benchmark times computes
FedAvg (the server path through ``RoundLoop`` with admission on), not something cheaper.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import aggregation
from bench.__main__ import discover_benchmarks, selected
from fl_core.hashing import sha256_hex


def test_tiny_grid_gives_finite_positive_rows_and_cleans_up(tmp_path: Path) -> None:
    report = aggregation.run_grid([2, 3], [1_000], workdir=tmp_path, repeats=1)

    measured = [row for row in report.rows if row.median_s is not None]
    methods = {row.method for row in measured}
    local = {
        aggregation.LABELS[key]
        for key in (
            "stream", "limit", "limit_f64", "sha256", "server_s3", "server_s3_numpy", "server",
            "no_admission",
        )
    }  # fmt: skip
    assert methods == local  # no Flower environment given: its rows say why, with no numbers
    for row in measured:
        gbps = row.gbps(row.median_s)
        assert gbps is not None and math.isfinite(gbps) and gbps > 0, row
        assert row.x_limit is not None or "STREAM" in row.method, row
        assert row.x_limit is None or row.x_limit > 0, row
        assert row.peak_rss_mb is not None and row.peak_rss_mb > 0, row  # measured, never computed
    flower = [row for row in report.rows if "Flower" in row.method]
    assert len(flower) == 4 and all(row.median_s is None and row.note for row in flower)
    assert list(tmp_path.iterdir()) == []  # federations removed
    aggregation.render(report, "smoke", repeats=1)  # renders without error


def test_every_contender_averages_the_same_updates(tmp_path: Path) -> None:
    updates = aggregation.write_updates(tmp_path, num_updates=5, num_params=1_003, seed=3)
    in_memory = aggregation.read_updates(updates, 5)
    weights = [n for _, n in in_memory]
    assert len({sha256_hex(w["layer0.weight"].tobytes()) for w, _ in in_memory}) == 5

    server = aggregation.run_server_round(updates)  # RoundLoop: every admission check on
    # the S3 path takes each digest from the store (the round checks the decisions say so)
    server_s3 = aggregation.run_server_round(updates, s3_path=True)
    streamed = aggregation.stream_fedsilo(updates, 5)
    limit = aggregation.accumulate_mmap(updates.paths(), weights)
    ceiling = aggregation.accumulate_mmap_f64(updates.paths(), weights)

    assert server.keys() == streamed.keys() == aggregation.tensor_sizes(1_003).keys()
    for name in server:
        expected = np.average([w[name] for w, _ in in_memory], axis=0, weights=weights)
        np.testing.assert_array_equal(server_s3[name], server[name])
        np.testing.assert_array_equal(ceiling[name], server[name])  # the same float64 sum
        for candidate in (server[name], streamed[name], limit[name]):
            np.testing.assert_allclose(
                np.asarray(candidate, dtype=np.float64), expected, rtol=1e-5, atol=1e-6
            )
    digests = aggregation.hash_files(updates.paths())
    assert digests == [sha256_hex(path.read_bytes()) for path in updates.paths()]


def test_the_table_is_written_as_json_too(tmp_path: Path) -> None:
    report = aggregation.GridReport(
        rows=[aggregation.Row("N=2 P=1k", "m", 1.0, 2.0, 8_000, 0.5, 10.0, 1.0, 0.1, "n")]
    )
    path = aggregation.write_json(report, "smoke", tmp_path)
    [table] = json.loads(path.read_text())["tables"]
    assert path.name == "aggregation.json" and table["title"] == "smoke"
    assert table["rows"][0]["gbps_median"] == 8_000 / 2.0 / 1e9
    assert table["rows"][0]["x_limit"] == 0.5


def test_runner_discovers_the_aggregation_benchmark() -> None:
    assert "aggregation" in discover_benchmarks()


def test_scale_bench_put_probe_measures_and_cleans_up(tmp_path: Path) -> None:
    from bench import scale_bench

    cost = scale_bench.put_cost_us(tmp_path, objects=20)
    assert math.isfinite(cost) and cost > 0
    assert list(tmp_path.iterdir()) == []  # probe objects removed


def test_only_takes_a_benchmarks_short_name() -> None:
    available = discover_benchmarks()
    assert selected(["scale", "aggregation"], available) == ["aggregation", "scale_bench"]


def test_a_round_whose_store_hands_over_digests_leaves_the_sum_a_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the S3 path nothing is hashed, so one checking thread fewer; a local folder hashes
    every update and checks on every core. Updates of 1 MiB, the smallest checked on threads."""
    from fl_server import lookahead

    monkeypatch.setattr(lookahead.os, "cpu_count", lambda: 4)
    updates = aggregation.write_updates(tmp_path, num_updates=2, num_params=1 << 18, seed=1)
    config = aggregation.FederationConfig.model_validate_json(updates.config_json)
    workers = {}
    for s3_path in (False, True):
        loop = aggregation._round_loop(updates.root, config, 2, s3_path=s3_path)
        state = loop.keeper.acquire(loop._first_state)
        workers[s3_path] = loop._open(state).check_workers
    assert workers == {False: 4, True: 3}
