"""Bring your own model and trainer: a plain PyTorch program handed to fedsilo.

Run it with::

    fedsilo simulate --app examples/custom_trainer.py:app --hospitals 8 --rounds 5

or from Python (``python examples/custom_trainer.py``). fedsilo builds one model and trainer
per hospital worker from the factories below; the exchange, verification and aggregation are
fedsilo's. A model that defines ``set_standardisation(mean, std)`` receives the federated
feature statistics before round 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsilo.engine.app import FederatedApp
from fl_client.trainer import ClientTrainer, TrainResult
from fl_core.config import FederationConfig
from fl_core.data.base import SiteData


class LogisticWithInteractions(nn.Module):
    """Logistic regression on standardised features plus a small learned interaction term."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(num_features))
        self.register_buffer("input_std", torch.ones(num_features))
        self.linear = nn.Linear(num_features, 1)
        self.interaction = nn.Sequential(nn.Linear(num_features, 8), nn.Tanh(), nn.Linear(8, 1))

    def set_standardisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.input_mean.copy_(torch.as_tensor(mean))
        self.input_std.copy_(torch.as_tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.nan_to_num((x - self.input_mean) / self.input_std, nan=0.0)
        return (self.linear(z) + self.interaction(z)).squeeze(-1)


class SgdTrainer(ClientTrainer):
    """Full-batch-free SGD with momentum; ``train`` is all a user must write."""

    def __init__(self, model: nn.Module, epochs: int, device: torch.device) -> None:
        super().__init__(model, device)
        self.epochs = epochs

    def train(self, data: SiteData, round_index: int, seed: int) -> TrainResult:
        generator = torch.Generator().manual_seed(seed)
        x = torch.from_numpy(data.train.x).to(self.device)
        y = torch.from_numpy(data.train.y.astype(np.float32)).to(self.device)
        optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        loss_fn = nn.BCEWithLogitsLoss()
        self.model.train()
        losses = []
        for _ in range(self.epochs):
            for batch in torch.randperm(len(y), generator=generator).split(256):
                optimizer.zero_grad()
                loss = loss_fn(self.model(x[batch]), y[batch])
                # the two hooks make FedProx and SCAFFOLD work with this trainer too
                self.local_objective.adjust_loss(self.model, loss).backward()
                self.local_objective.adjust_gradients(self.model)
                optimizer.step()
                losses.append(loss.item())
        return TrainResult(num_examples=len(y), train_loss=float(np.mean(losses)))


def make_model(num_features: int, config: FederationConfig) -> nn.Module:
    return LogisticWithInteractions(num_features)


def make_trainer(model: nn.Module, config: FederationConfig, device: torch.device) -> ClientTrainer:
    return SgdTrainer(model, epochs=config.training.local_epochs, device=device)


app = FederatedApp(model=make_model, trainer=make_trainer)


if __name__ == "__main__":
    from fedsilo.engine.process_engine import simulate
    from fl_core.config import load_config

    result = simulate(
        load_config(overrides={"rounds": 5, "data.synthetic.hospitals": 8}), Path("runs"), app=app
    )
    for row in result.rows:
        print(row.round, row.auroc)
