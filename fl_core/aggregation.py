"""Streaming FedAvg: a weighted mean built one update at a time.

The aggregator holds one float64 accumulator per tensor and one update in memory at a time, so
memory is O(model) whatever the number of hospitals. float64 accumulation keeps the result
independent of arrival order far below anything a metric sees.

An update is added slice by slice (``CHUNK_ELEMENTS``): each slice's float64 product lives in
a small scratch buffer that stays in cache, so adding an update reads it once and reads and
writes the sum once, and the scratch costs 1 MiB instead of a second model-sized buffer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from fl_core.errors import AggregationError
from fl_core.serialization import TensorSpec
from fl_core.types import Weights

CHUNK_ELEMENTS = 1 << 17
"""Elements per slice of an update added at a time (a float64 scratch of 1 MiB)."""


class StreamingWeightedMean:
    """Accumulates ``sum(n_i * w_i)`` and ``sum(n_i)``; ``result()`` divides once."""

    def __init__(self, specs: Mapping[str, TensorSpec]) -> None:
        self._specs = dict(specs)
        self._sums = {
            name: np.zeros(spec.shape, dtype=np.float64) for name, spec in self._specs.items()
        }
        self._scratch = np.empty(CHUNK_ELEMENTS, dtype=np.float64)
        self.total_weight = 0.0
        self.count = 0

    def add(self, weights: Mapping[str, npt.NDArray[np.generic]], weight: float) -> None:
        """Add one update; names and shapes were checked at admission."""
        if not weight > 0:
            raise AggregationError(f"update weight must be > 0, got {weight}")
        if weights.keys() != self._sums.keys():
            raise AggregationError("update tensors differ from the global model's; admit first")
        for name, total in self._sums.items():
            flat_total = total.reshape(-1)
            flat_update = np.asarray(weights[name]).reshape(-1)
            for start in range(0, flat_total.size, CHUNK_ELEMENTS):
                stop = start + CHUNK_ELEMENTS
                part = flat_update[start:stop]
                scratch = self._scratch[: part.size]
                # dtype=float64: the product itself in float64 (NEP 50 would compute a
                # float32 array times a Python float in float32 and only then widen it)
                np.multiply(part, weight, out=scratch, dtype=np.float64)
                np.add(flat_total[start:stop], scratch, out=flat_total[start:stop])
        self.total_weight += weight
        self.count += 1

    def result(self) -> Weights:
        if self.count == 0 or self.total_weight <= 0:
            raise AggregationError("no updates to average; check round.min_sites")
        result: Weights = {}
        for name, total in self._sums.items():
            out = np.empty(total.shape, dtype=self._specs[name].dtype)
            flat_out, flat_total = out.reshape(-1), total.reshape(-1)
            for start in range(0, flat_total.size, CHUNK_ELEMENTS):
                stop = start + CHUNK_ELEMENTS
                scratch = self._scratch[: flat_total[start:stop].size]
                np.divide(flat_total[start:stop], self.total_weight, out=scratch)
                flat_out[start:stop] = scratch
            result[name] = out
        return result


def weighted_mean(updates: Sequence[tuple[Mapping[str, npt.NDArray[np.generic]], int]]) -> Weights:
    """FedAvg of in-memory updates weighted by ``num_examples`` (tests and small callers)."""
    if not updates:
        raise AggregationError("no updates; check round.min_sites")
    first = updates[0][0]
    specs = {name: TensorSpec(str(a.dtype), tuple(a.shape)) for name, a in first.items()}
    mean = StreamingWeightedMean(specs)
    for weights, num_examples in updates:
        mean.add(weights, float(num_examples))
    return mean.result()
