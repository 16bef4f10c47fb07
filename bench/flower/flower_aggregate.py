"""Time Flower's ``aggregate`` on update files (runs in the Flower environment, fresh process).

Run by ``bench/flower_compare.py``; reads a JSON spec on stdin: ``paths`` (safetensors update
files, as fedsilo's hospitals write them), ``num_examples`` (one per file), ``min_total_s``,
and optionally ``result`` (a path to write the average to, so a test can compare it with
fedsilo's). Loads every update into memory first, which is what Flower's API takes
(``list[tuple[NDArrays, int]]``), then times ``flwr.server.strategy.aggregate.aggregate`` best
of up to 5 runs. Prints one JSON line: seconds, the seconds loading took, RSS before loading
and before aggregating (all updates loaded), and the process's peak RSS (VmHWM).
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time

import numpy as np
import safetensors.numpy
from flwr.server.strategy.aggregate import aggregate

MAX_REPEATS = 5


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    """``VmHWM``: unlike ``ru_maxrss``, it starts afresh at exec, not at the parent's RSS."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> int:
    spec = json.load(sys.stdin)
    names: list[str] = []
    results = []
    before_load_rss = _rss_bytes()
    load_started = time.perf_counter()
    for path, num_examples in zip(spec["paths"], spec["num_examples"], strict=True):
        tensors = safetensors.numpy.load_file(path)
        names = sorted(tensors)
        results.append(([tensors[name] for name in names], int(num_examples)))
        del tensors
    load_seconds = time.perf_counter() - load_started
    start_rss = _rss_bytes()
    best, spent = math.inf, 0.0
    averaged: list[np.ndarray] = []
    for _ in range(MAX_REPEATS):
        averaged = []  # drop the previous average before the next run allocates its own
        started = time.perf_counter()
        averaged = aggregate(results)
        seconds = time.perf_counter() - started
        best, spent = min(best, seconds), spent + seconds
        if spent >= spec["min_total_s"]:
            break
    if spec.get("result"):
        safetensors.numpy.save_file(dict(zip(names, averaged, strict=True)), spec["result"])
    peak = _peak_rss_bytes()
    print(
        json.dumps(
            {
                "seconds": best,
                "load_seconds": load_seconds,
                "before_load_rss_bytes": before_load_rss,
                "start_rss_bytes": start_rss,
                "peak_rss_bytes": peak,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
