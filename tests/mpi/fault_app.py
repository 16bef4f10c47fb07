"""A ``FederatedApp`` whose trainer fails at one site in round 2: the MPI fault test's fault.

Loaded by file path (``--app tests/mpi/fault_app.py:app``) in every rank, as a user's app is.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsilo.engine.app import FederatedApp
from fl_client.tabular import TabularTrainer
from fl_client.trainer import ClientTrainer, TrainResult
from fl_core.config import FederationConfig
from fl_core.data.base import SiteData
from fl_core.errors import FedsiloError

FAILING_SITE = "site-002"
FAILING_ROUND = 2


class FailingTrainer(TabularTrainer):
    def train(self, data: SiteData, round_index: int, seed: int) -> TrainResult:
        if data.site_id == FAILING_SITE and round_index == FAILING_ROUND:
            raise FedsiloError(f"injected fault at {FAILING_SITE} in round {FAILING_ROUND}")
        return super().train(data, round_index, seed)


def failing_trainer(
    model: nn.Module, config: FederationConfig, device: torch.device
) -> ClientTrainer:
    return FailingTrainer(model, config.training, device)


app = FederatedApp(trainer=failing_trainer)
