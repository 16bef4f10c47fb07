"""The benchmarks that time contenders run their pieces end to end on tiny inputs.

No timing is asserted (the machine is shared): only that every script is discovered with a
``main(quick)``, that each timed piece runs what it says, and that the tables are drawn from
every repeat.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import _timing, data_bench, s3_bench
from bench.__main__ import _load_main, discover_benchmarks

TIMED = ("data_bench", "gpu_throughput", "s3_bench", "scale_bench", "secagg_bench")
QUALITY = ("eicu_bench", "privacy_bench", "server_opt_bench", "strategies_bench")


def test_every_converted_benchmark_is_discovered_with_a_main() -> None:
    found = discover_benchmarks()
    for name in (*TIMED, *QUALITY):
        assert name in found and _load_main(name) is not None, name


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(var, "testing")  # restored after the test, whatever the bench sets
    with s3_bench._moto_server() as endpoint:
        yield endpoint


def test_s3_round_trip_and_round_run_on_moto(moto_endpoint: str) -> None:
    table = s3_bench.round_trip(moto_endpoint, 200_000, repeats=_timing.MIN_REPEATS)
    assert table.row_count == 2

    split = s3_bench.run_hospital_round(moto_endpoint, hospitals=3, params=100)

    assert (split.accepted, split.rejected) == (3, 0)
    assert split.round_s > 0 and split.seconds["transfer"] > 0
    assert split.calls["verification"] > 0  # admission's checks ran and were timed
    assert split.calls["aggregation"] > 0


def test_data_pipeline_times_every_stage(tmp_path: Path) -> None:
    run = data_bench.run_pipeline(tmp_path, stays=1_500)

    assert run.stages[0][0].startswith("synthesise")
    assert len(run.stages) == 5
    assert all(math.isfinite(seconds) and seconds > 0 for _, seconds, _ in run.stages)
