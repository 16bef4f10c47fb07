"""Server optimizers (FedAvgM, FedAdam, FedYogi, FedAdagrad) as a ``ServerAggregator``.

Each round the hospitals' updates are averaged exactly as FedAvg does (streamed, weighted by
``num_examples``, one update in memory at a time); ``delta = mean - global`` then takes one
step of the server optimizer (the math: ``fl_core.server_optimizers``). Only floating-point
tensors are optimized; integer buffers take the plain weighted mean.

The moments are saved in ``state.json`` after every round (base64 safetensors, see
``tensor_state``), so a restarted aggregator continues bit for bit. That costs 4 bytes per
parameter per moment, times 4/3 for base64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fl_core.aggregation import StreamingWeightedMean
from fl_core.errors import AggregationError, ConfigError
from fl_core.serialisation import specs_of
from fl_core.server_optimizers import ServerOptimizerRule, server_optimizer_step
from fl_core.types import Weights
from fl_server.aggregator import ServerAggregator
from fl_server.strategies.tensor_state import decode_tensor_state, encode_tensor_state


class ServerOptimizerAggregator(ServerAggregator):
    """Streaming FedAvg followed by one server-optimizer step on ``mean - global``."""

    def __init__(
        self,
        rule: ServerOptimizerRule,
        *,
        server_learning_rate: float,
        beta1: float = 0.0,
        beta2: float = 0.0,
        tau: float = 1e-3,
        bias_correction: bool = False,
    ) -> None:
        if server_learning_rate <= 0:
            raise ConfigError("strategy.server_learning_rate must be > 0")
        self.rule = rule
        self.server_learning_rate = server_learning_rate
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
        self.bias_correction = bias_correction
        self.step = 0
        self._moments: dict[str, npt.NDArray[np.float32]] = {}
        self._global: Weights | None = None
        self._mean: StreamingWeightedMean | None = None

    def begin_round(self, round_index: int, global_weights: Weights) -> None:
        self._global = {name: np.array(array, copy=True) for name, array in global_weights.items()}
        self._mean = StreamingWeightedMean(specs_of(global_weights))
        self._check_moments_fit(self._global)

    def add(self, weights: Weights, num_examples: int) -> None:
        if self._mean is None:
            raise AggregationError("add() before begin_round()")
        self._mean.add(weights, float(num_examples))

    def finish(self) -> Weights:
        """One optimizer step; the moments advance, so call it once per round."""
        if self._mean is None or self._global is None:
            raise AggregationError("finish() before begin_round()")
        mean = self._mean.result()
        moments = dict(self._moments)
        result: Weights = {}
        for name, start in self._global.items():
            if not np.issubdtype(start.dtype, np.floating):
                result[name] = mean[name]
                continue
            delta = mean[name].astype(np.float64) - start.astype(np.float64)
            step = self._step(name, delta, moments)
            result[name] = (start.astype(np.float64) + self.server_learning_rate * step).astype(
                start.dtype
            )
        self._moments = moments
        self.step += 1
        return result

    def _step(
        self, name: str, delta: npt.NDArray[np.float64], moments: dict[str, npt.NDArray[np.float32]]
    ) -> npt.NDArray[np.float64]:
        """The update direction for one tensor; writes its new moments into ``moments``."""
        direction, m, v = server_optimizer_step(
            rule=self.rule,
            delta=delta,
            m=moments.get(f"m.{name}"),
            v=moments.get(f"v.{name}"),
            beta1=self.beta1,
            beta2=self.beta2,
            tau=self.tau,
            bias_correction=self.bias_correction,
            step=self.step + 1,  # this round's step, counted from 1
        )
        moments[f"m.{name}"] = m
        if v is not None:
            moments[f"v.{name}"] = v
        return direction

    def _check_moments_fit(self, global_weights: Weights) -> None:
        for key, moment in self._moments.items():
            name = key.split(".", 1)[1]
            found = global_weights.get(name)
            if found is None or found.shape != moment.shape:
                raise AggregationError(
                    f"{self.rule} state holds moment {key!r} of shape {moment.shape}, which "
                    "does not fit the global model; the model changed under a running "
                    "federation: start a new federation_id"
                )

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rule": self.rule, "step": self.step}
        if self._moments:
            state["moments"] = encode_tensor_state(self._moments)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return  # a federation saved before its first round
        if state.get("rule") != self.rule:
            raise AggregationError(
                f"state.json holds strategy state of {state.get('rule')!r}, not {self.rule!r}; "
                "resume with the config the federation started with"
            )
        step = state.get("step")
        if not isinstance(step, int) or step < 0:
            raise AggregationError(f"{self.rule} state has an invalid step {step!r}")
        moments = decode_tensor_state(state["moments"], self.rule) if "moments" in state else {}
        self.step = step
        self._moments = {name: np.asarray(array, np.float32) for name, array in moments.items()}
