"""Server optimizers on the pseudo-gradient: FedAvgM, FedAdam, FedYogi, FedAdagrad.

Each round the hospitals' updates are averaged exactly as FedAvg does (streamed, weighted by
``num_examples``, one update in memory at a time); the difference ``delta = mean - global``
is then treated as a gradient step and fed to a server optimizer:

- FedAvgM (Hsu et al. 2019): ``m = momentum * m + delta``, ``x = x + lr * m``.
- FedAdam / FedYogi / FedAdagrad (Reddi et al. 2021, Algorithm 2, no bias correction):
  ``m = b1 * m + (1 - b1) * delta`` and ``x = x + lr * m / (sqrt(v) + tau)``, with
  ``v = b2 * v + (1 - b2) * delta**2`` (Adam),
  ``v = v - (1 - b2) * delta**2 * sign(v - delta**2)`` (Yogi), ``v = v + delta**2`` (Adagrad).
- ``bias_correction`` (the config's default) divides the step by Adam's zero-start factors
  (Kingma & Ba 2015; as Flower's FedAdam does): ``m / (1 - b1**t)``, and for Adam and Yogi
  ``v / (1 - b2**t)``. Without it the first rounds move ``1 - b1`` (a tenth) as far as the
  moments' steady state, and Adagrad's, whose ``v`` only grows, never catches up: measured on
  the default federation, FedAdagrad sat at AUROC 0.45 after 3 rounds where FedAvg passed 0.7.

Only floating-point tensors are optimized; integer buffers take the plain weighted mean. The
moments are kept in float32 and saved in ``state.json`` after every round, so a restarted
aggregator continues bit for bit; that costs 4 bytes per parameter per moment (x 4/3 for
base64), i.e. about 5.3 bytes per parameter for FedAvgM and 10.7 for the adaptive ones.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fl_core.aggregation import StreamingWeightedMean
from fl_core.config import FedAvgMStrategy, FederationConfig, FedOptStrategy
from fl_core.errors import AggregationError, ConfigError
from fl_core.serialization import specs_of
from fl_core.types import Weights
from fl_server.aggregator import ServerAggregator
from fl_server.strategies import register
from fl_server.strategies.tensor_state import decode_tensor_state, encode_tensor_state

Float64 = npt.NDArray[np.float64]
Rule = Literal["fedavgm", "fedadam", "fedyogi", "fedadagrad"]


class ServerOptimizerAggregator(ServerAggregator):
    """Streaming FedAvg followed by one server-optimizer step on ``mean - global``."""

    def __init__(
        self,
        rule: Rule,
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

    @property
    def _adaptive(self) -> bool:
        return self.rule != "fedavgm"

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
        self, name: str, delta: Float64, moments: dict[str, npt.NDArray[np.float32]]
    ) -> Float64:
        """The update direction for one tensor; writes its new moments into ``moments``."""
        zeros = np.zeros(delta.shape, np.float32)
        m_old = moments.get(f"m.{name}", zeros).astype(np.float64)
        if not self._adaptive:
            moments[f"m.{name}"] = (self.beta1 * m_old + delta).astype(np.float32)
            # the step uses the float32 moment as saved, so a resumed run takes the same step
            momentum: Float64 = moments[f"m.{name}"].astype(np.float64)
            return momentum
        m = self.beta1 * m_old + (1.0 - self.beta1) * delta
        v_old = moments.get(f"v.{name}", zeros).astype(np.float64)
        squared = delta * delta
        if self.rule == "fedadam":
            v = self.beta2 * v_old + (1.0 - self.beta2) * squared
        elif self.rule == "fedyogi":
            v = v_old - (1.0 - self.beta2) * squared * np.sign(v_old - squared)
        else:  # fedadagrad
            v = v_old + squared
        moments[f"m.{name}"] = m.astype(np.float32)
        moments[f"v.{name}"] = v.astype(np.float32)
        m32 = moments[f"m.{name}"].astype(np.float64)
        v32 = moments[f"v.{name}"].astype(np.float64)
        if self.bias_correction:
            t = self.step + 1  # this round's step, counted from 1
            m32 = m32 / (1.0 - self.beta1**t)
            if self.rule != "fedadagrad":  # Adagrad's v is a plain sum: no zero-start decay
                v32 = v32 / (1.0 - self.beta2**t)
        out: Float64 = m32 / (np.sqrt(np.maximum(v32, 0.0)) + self.tau)
        return out

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


def _fedavgm(config: FederationConfig) -> ServerAggregator:
    strategy = config.strategy
    if not isinstance(strategy, FedAvgMStrategy):
        raise ConfigError(f"strategy {strategy.name!r} is not fedavgm")
    return ServerOptimizerAggregator(
        "fedavgm",
        server_learning_rate=strategy.server_learning_rate,
        beta1=strategy.momentum,
    )


def _fedopt(config: FederationConfig) -> ServerAggregator:
    strategy = config.strategy
    if not isinstance(strategy, FedOptStrategy):
        raise ConfigError(f"strategy {strategy.name!r} is not an adaptive server optimizer")
    return ServerOptimizerAggregator(
        strategy.name,
        server_learning_rate=strategy.server_learning_rate,
        beta1=strategy.beta1,
        beta2=strategy.beta2,
        tau=strategy.tau,
        bias_correction=strategy.bias_correction,
    )


register("fedavgm", _fedavgm)
for _name in ("fedadam", "fedyogi", "fedadagrad"):
    register(_name, _fedopt)
