"""The GPU throughput benchmark times whole local rounds, interleaved, on any device."""

from __future__ import annotations

import math

from bench import _federation, gpu_throughput


def test_devices_are_timed_interleaved_with_the_same_stays_per_round() -> None:
    config = _federation.benchmark_config(hospitals=2, rounds=1, mean_stays=200)

    runs, stays = gpu_throughput.measure_batch(
        config, ("cpu",), batch_size=64, repeats=3, min_total_s=0.01
    )

    assert stays > 0 and list(runs) == ["cpu"]
    assert len(runs["cpu"]) == 3 and all(math.isfinite(s) and s > 0 for s in runs["cpu"])
