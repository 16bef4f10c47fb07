"""Norm-bounded FedAvg: each update's delta is clipped to ``clip_norm`` before averaging.

A hostile hospital can still push the model, but by at most ``clip_norm`` (times its share of
the examples) per round, instead of arbitrarily far (Sun et al. 2019, "Can you really backdoor
federated learning?"). The norm is the L2 norm of ``update - global`` over every tensor of the
model together, clipped as DP-FedAvg clips (``fl_core.privacy.mechanisms``), without noise.
Streaming like FedAvg: one update in memory at a time, memory O(model).
"""

from __future__ import annotations

import numpy as np
import structlog

from fl_core.aggregation import StreamingWeightedMean
from fl_core.errors import AggregationError, ConfigError
from fl_core.privacy.mechanisms import clip_factor, delta_norm
from fl_core.serialisation import specs_of
from fl_core.types import Weights
from fl_server.aggregator import ServerAggregator

log = structlog.get_logger("fedsilo.server")


class NormBoundedAggregator(ServerAggregator):
    """``global + weighted_mean(clip(update - global, clip_norm))``."""

    def __init__(self, clip_norm: float) -> None:
        if not clip_norm > 0:
            raise ConfigError("strategy.clip_norm must be > 0")
        self.clip_norm = clip_norm
        self._global: Weights | None = None
        self._mean: StreamingWeightedMean | None = None
        self.clipped = 0
        """How many updates of the round were scaled down (for logs and tests)."""

    def begin_round(self, round_index: int, global_weights: Weights) -> None:
        self._global = {name: np.array(array, copy=True) for name, array in global_weights.items()}
        self._mean = StreamingWeightedMean(specs_of(global_weights))
        self.clipped = 0

    def add(self, weights: Weights, num_examples: int) -> None:
        if self._mean is None or self._global is None:
            raise AggregationError("add() before begin_round()")
        norm = delta_norm(update=weights, reference=self._global)
        if norm <= self.clip_norm:
            self._mean.add(weights, float(num_examples))
            return
        self.clipped += 1
        scale = clip_factor(norm=norm, clip_norm=self.clip_norm)
        clipped = {
            name: start.astype(np.float64)
            + scale * (weights[name].astype(np.float64) - start.astype(np.float64))
            for name, start in self._global.items()
        }
        self._mean.add(clipped, float(num_examples))

    def finish(self) -> Weights:
        if self._mean is None:
            raise AggregationError("finish() before begin_round()")
        log.info("updates_clipped", clipped=self.clipped, clip_norm=self.clip_norm)
        return self._mean.result()
