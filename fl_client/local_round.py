"""The hospital side of a strategy for one training round: set the objective, shape the update.

``answer_round`` calls ``begin_local_round`` before ``trainer.train`` and ``outgoing`` on the
trained weights; ``commit`` runs once the update is in the exchange. For strategies that only
change the server (FedAvg, FedAdam, robust rules) all three change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fl_client.local_objective import (
    LocalObjective,
    ProximalObjective,
    ScaffoldObjective,
)
from fl_client.scaffold_state import ControlVariate
from fl_client.trainer import ClientTrainer, TrainResult
from fl_core.config import FederationConfig, FedProxStrategy, ScaffoldStrategy
from fl_core.control_variates import join_controls
from fl_core.errors import ConfigError
from fl_core.types import Weights


@dataclass
class LocalRound:
    """What one hospital's strategy needs between ``begin`` and ``commit`` of one round."""

    site_id: str
    federation_id: str
    round_index: int
    objective: LocalObjective
    control_variate: ControlVariate | None = None
    client_control: Weights | None = None
    new_client_control: Weights | None = None

    def outgoing(self, trained: Weights, result: TrainResult) -> Weights:
        """The tensors to send: the trained model, plus SCAFFOLD's control delta."""
        objective = self.objective
        if not isinstance(objective, ScaffoldObjective) or self.client_control is None:
            return trained
        before = self.client_control
        if objective.steps > 0:
            means = objective.mean_gradients()
            after = {name: means.get(name, array) for name, array in before.items()}
        elif result.num_examples == 0:
            after = before  # nothing to train on: c_i stays, the delta is zero
        else:
            raise ConfigError(
                f"site {self.site_id} round {self.round_index}: the trainer made no "
                "local_objective.adjust_gradients calls, which SCAFFOLD needs; call it after "
                "backward() in your ClientTrainer.train (see fl_client.trainer.ClientTrainer)"
            )
        self.new_client_control = {
            name: np.asarray(value, dtype=before[name].dtype) for name, value in after.items()
        }
        delta: Weights = {
            name: np.subtract(self.new_client_control[name], before[name]) for name in before
        }
        return join_controls(trained, delta)

    def commit(self) -> None:
        """The update is in the exchange: keep the new ``c_i`` (memory and state folder)."""
        if self.control_variate is None or self.client_control is None:
            return
        if self.new_client_control is None:
            return
        self.control_variate.commit(
            self.federation_id, self.round_index, self.client_control, self.new_client_control
        )


def begin_local_round(
    trainer: ClientTrainer,
    config: FederationConfig,
    site_id: str,
    round_index: int,
    global_model: Weights,
    controls: Weights,
    control_variate: ControlVariate,
) -> LocalRound:
    """Set ``trainer.local_objective`` for this round's strategy and return the round's glue."""
    strategy = config.strategy
    federation_id = config.federation_id
    if isinstance(strategy, ScaffoldStrategy) != bool(controls):
        raise ConfigError(
            f"site {site_id} round {round_index}: strategy.name is {strategy.name!r} but the "
            f"global model {'carries' if controls else 'lacks'} SCAFFOLD control tensors; run "
            "the hospital with the federation's config"
        )
    objective: LocalObjective = LocalObjective()
    local = LocalRound(site_id, federation_id, round_index, objective)
    if isinstance(strategy, FedProxStrategy):
        local.objective = ProximalObjective(trainer.model, global_model, strategy.mu)
    elif isinstance(strategy, ScaffoldStrategy):
        client = control_variate.value_for(federation_id, round_index, controls)
        local.objective = ScaffoldObjective(trainer.model, controls, client)
        local.control_variate, local.client_control = control_variate, client
    trainer.local_objective = local.objective
    return local
