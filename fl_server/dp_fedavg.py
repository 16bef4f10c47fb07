"""Client-level differential privacy at the aggregator: DP-FedAvg (McMahan et al. 2018).

Per round: each admitted update's delta from the global model is clipped to L2 norm
``clip_norm`` (over every float tensor but ``exclude_tensors``), the clipped deltas are summed
(one at a time: memory O(model)), Gaussian noise of std ``noise_multiplier * clip_norm`` is
added once to the sum, and the sum is divided by the number of invited sites. The
denominator is fixed (it does not depend on who answered) and every hospital counts once,
whatever its size, so adding or removing one hospital moves the sum by at most
``clip_norm``: the sensitivity the noise is calibrated to.

Accounting goes through Opacus's RDP accountant, one step per round with sample rate 1: every
site is invited every round, and a site that does not answer was not sampled by a secret coin,
so dropouts give no privacy amplification (counting them as subsampling would understate
epsilon). The accountant history and the secret seed of the next round's noise live in
``strategy_state`` (``state.json``, which hospitals cannot read), so a restarted aggregator
re-aggregates a closed round to the identical model and keeps the epsilon spent.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_core.config import FederationConfig
from fl_core.errors import AggregationError
from fl_core.privacy import (
    Accountant,
    DpFedAvgConfig,
    check_delta,
    clip_factor,
    dp_fedavg_noise,
    l2_norm,
    noise_std,
    noisy_mean,
)
from fl_core.types import SiteId, Weights
from fl_server.aggregator import ServerAggregator

SAMPLE_RATE = 1.0  # every site is invited every round (see the module docstring)


def _new_seed() -> int:
    return secrets.randbits(63)


class DpFedAvgAggregator(ServerAggregator):
    """Clip, sum, add noise once, divide by the number of invited sites."""

    def __init__(self, config: DpFedAvgConfig, rounds: int) -> None:
        self.config = config
        self.noise_multiplier = dp_fedavg_noise(config, rounds=rounds, sample_rate=SAMPLE_RATE)
        self.accountant = Accountant()
        self._noise_seed = _new_seed()
        self._num_sites: int | None = None
        self._global: Weights | None = None
        self._sums: dict[str, npt.NDArray[np.float64]] = {}
        self.count = 0
        self.clipped = 0

    # ---- the round ----------------------------------------------------------------------

    def set_invited_sites(self, sites: Sequence[SiteId]) -> None:
        check_delta(
            what="privacy.dp_fedavg", delta=self.config.delta, population=len(sites), unit="sites"
        )
        self._num_sites = len(sites)

    def _noised(self, name: str, array: npt.NDArray[Any]) -> bool:
        return np.issubdtype(array.dtype, np.floating) and name not in self.config.exclude_tensors

    def begin_round(self, round_index: int, global_weights: Weights) -> None:
        self._global = {name: np.array(array, copy=True) for name, array in global_weights.items()}
        self._sums = {
            name: np.zeros(array.shape, np.float64)
            for name, array in self._global.items()
            if self._noised(name, array)
        }
        self.count = 0
        self.clipped = 0

    def add(self, weights: Weights, num_examples: int) -> None:
        if self._global is None:
            raise AggregationError("add() before begin_round()")
        deltas = {
            name: np.asarray(weights[name], np.float64) - np.asarray(self._global[name], np.float64)
            for name in self._sums
        }
        factor = clip_factor(norm=l2_norm(deltas.values()), clip_norm=self.config.clip_norm)
        self.clipped += factor < 1.0
        for name, delta in deltas.items():
            self._sums[name] += delta * factor
        self.count += 1

    def finish(self) -> Weights:
        if self._global is None:
            raise AggregationError("finish() before begin_round()")
        if self._num_sites is None:
            raise AggregationError("DP-FedAvg needs the invited sites before the round begins")
        rng = np.random.Generator(np.random.PCG64(self._noise_seed))
        std = noise_std(noise_multiplier=self.noise_multiplier, clip_norm=self.config.clip_norm)
        result: Weights = {}
        for name, array in self._global.items():
            total = self._sums.get(name)
            if total is None:
                result[name] = array.copy()
                continue
            noisy = noisy_mean(total=total, std=std, denominator=self._num_sites, rng=rng)
            result[name] = (np.asarray(array, np.float64) + noisy).astype(array.dtype)
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=SAMPLE_RATE)
        self._noise_seed = _new_seed()  # the next round's, saved with the state
        return result

    @property
    def epsilon(self) -> float:
        """Client-level epsilon spent so far at ``config.delta`` (Opacus RDP)."""
        return self.accountant.epsilon(self.config.delta)

    # ---- restart --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "dp_fedavg": {
                "accountant": self.accountant.state_dict(),
                "noise_seed": str(self._noise_seed),
                "noise_multiplier": self.noise_multiplier,
            }
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("dp_fedavg")
        if not isinstance(saved, dict):
            raise AggregationError(
                "state.json holds no DP-FedAvg state; this federation was started without "
                "privacy.dp_fedavg: use its original config or a new federation_id"
            )
        if float(saved["noise_multiplier"]) != self.noise_multiplier:
            raise AggregationError(
                f"state.json was written with noise_multiplier {saved['noise_multiplier']}, "
                f"this config gives {self.noise_multiplier}; use the federation's config"
            )
        self.accountant.load_state_dict(saved["accountant"])
        self._noise_seed = int(saved["noise_seed"])


def build_dp_fedavg(config: FederationConfig) -> DpFedAvgAggregator:
    """The DP-FedAvg aggregator for a config with ``privacy.dp_fedavg`` set."""
    dp = config.privacy.dp_fedavg
    if dp is None:
        raise AggregationError("build_dp_fedavg needs privacy.dp_fedavg in the config")
    return DpFedAvgAggregator(dp, config.rounds)
