"""SCAFFOLD on the server: streamed model mean plus the control variate update.

The server control variate ``c`` lives in the global model file (``scaffold.c.*`` tensors,
see ``fl_core.control_variates``), not in ``state.json``: a restarted aggregator re-reads the
round's global model and gets ``c`` back with it, and replaying the admitted updates rebuilds
the sums. Memory stays O(model): one float64 accumulator for the models, one for the deltas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fl_core.aggregation import StreamingWeightedMean
from fl_core.control_variates import (
    has_controls,
    join_controls,
    server_step,
    split_controls,
    zero_controls,
)
from fl_core.errors import AggregationError
from fl_core.serialisation import specs_of
from fl_core.types import SiteId, Weights
from fl_server.aggregator import ServerAggregator


class ScaffoldAggregator(ServerAggregator):
    """``x <- x + eta_g * weighted_mean(y_i - x)``, ``c <- c + (|S|/N) * mean(delta c_i)``.

    The model mean is weighted by ``num_examples`` (as FedAvg); the control deltas are summed
    and divided by N, the number of hospitals invited to the round (all of them in a
    cross-silo federation), so ``c`` stays the mean of the hospitals' ``c_i``.
    """

    def __init__(self, server_learning_rate: float = 1.0) -> None:
        self.server_learning_rate = server_learning_rate
        self._num_invited: int | None = None
        self._global: Weights | None = None
        self._control: Weights | None = None
        self._mean: StreamingWeightedMean | None = None
        self._delta_sums: dict[str, np.ndarray] = {}
        self._count = 0

    def initial_global(self, weights: Weights) -> Weights:
        """Round 1's model with ``c = 0`` for every floating-point tensor."""
        if has_controls(weights):
            return weights
        return join_controls(weights, zero_controls(weights))

    def set_invited_sites(self, sites: Sequence[SiteId]) -> None:
        self._num_invited = len(sites)

    def begin_round(self, round_index: int, global_weights: Weights) -> None:
        model, control = split_controls(global_weights)
        if not control:
            raise AggregationError(
                f"round {round_index}'s global model has no scaffold.c.* tensors: the "
                "federation was started with another strategy; start a new federation_id "
                "with strategy.name scaffold"
            )
        self._global, self._control = model, control
        self._mean = StreamingWeightedMean(specs_of(model))
        self._delta_sums = {name: np.zeros(c.shape, np.float64) for name, c in control.items()}
        self._count = 0

    def add(self, weights: Weights, num_examples: int) -> None:
        if self._mean is None:
            raise AggregationError("add() before begin_round()")
        model, deltas = split_controls(weights)
        if deltas.keys() != self._delta_sums.keys():
            raise AggregationError("update control tensors differ from the global's; admit first")
        self._mean.add(model, float(num_examples))
        for name, total in self._delta_sums.items():
            total += deltas[name]
        self._count += 1

    def finish(self) -> Weights:
        if self._mean is None or self._global is None or self._control is None:
            raise AggregationError("finish() before begin_round()")
        model, control = server_step(
            global_model=self._global,
            mean_model=self._mean.result(),
            server_control=self._control,
            control_delta_sum=self._delta_sums,
            num_sites=self._num_invited or self._count,
            server_learning_rate=self.server_learning_rate,
        )
        return join_controls(model, control)
