"""The default trainer: mini-batch training of a binary-outcome model, imbalance aware.

Every hospital makes at least ``min_local_steps`` optimizer steps a round (more whole epochs
for a small one), so that federations of tiny hospitals (eICU's median is ~11 stays) learn.

Deterministic under a seed on CPU: the batch order and dropout masks come from a generator
seeded per (federation seed, site, round).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fl_client.local_objective import LocalObjective
from fl_client.private import HospitalPrivacy
from fl_client.trainer import ClientTrainer, TrainResult, seed_torch
from fl_core.config import TrainingConfig
from fl_core.data.base import SiteData


def local_epochs(num_examples: int, config: TrainingConfig) -> int:
    """Whole epochs of a round: ``config.local_epochs``, or more to reach ``min_local_steps``."""
    steps_per_epoch = -(-num_examples // config.batch_size)
    needed = -(-config.min_local_steps // max(steps_per_epoch, 1))
    return max(config.local_epochs, needed)


def planned_steps(num_examples: int, config: TrainingConfig) -> int:
    """Optimizer steps a round of training makes on ``num_examples`` rows (no data needed).

    For the small default model a step costs about the same whatever its batch (from 2 to 128
    rows; ``python -m bench --only gpu_throughput`` times a round at two batch sizes), so this
    is what a round costs a hospital, and what the simulation balances its workers by.
    """
    return local_epochs(num_examples, config) * -(-num_examples // config.batch_size)


class TabularTrainer(ClientTrainer):
    privacy: HospitalPrivacy | None = None  # DP-SGD, bound per round by fl_client.privacy_budget

    def __init__(
        self, model: nn.Module, config: TrainingConfig, device: torch.device | None = None
    ) -> None:
        super().__init__(model, device)
        self.config = config

    def _pos_weight(self, labels: np.ndarray) -> float:
        if self.config.class_weighting == "none":
            return 1.0
        positives = int(labels.sum())
        negatives = int(labels.size - positives)
        if positives == 0 or negatives == 0:
            return 1.0  # one class at this hospital: nothing to rebalance against
        return float(min(negatives / positives, self.config.max_pos_weight))

    def local_epochs(self, num_examples: int) -> int:
        """Whole epochs this round: ``local_epochs``, or more to reach ``min_local_steps``.

        A hospital with few rows makes few steps per epoch (8 rows at batch 128: one); without
        a floor on steps it barely moves the global model however many hospitals there are.
        Large hospitals already make more steps than the floor and are unchanged.
        """
        return local_epochs(num_examples, self.config)

    def _optimizer(self) -> torch.optim.Optimizer:
        params = self.model.parameters()
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.config.learning_rate,
                momentum=0.9,
                weight_decay=self.config.weight_decay,
            )
        return torch.optim.Adam(
            params, lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )

    def finetune(self, data: SiteData, epochs: int, seed: int) -> TrainResult:
        """Exactly ``epochs`` epochs with the plain objective (no step floor): personalisation."""
        federated = self.config
        plain = {**federated.model_dump(), "local_epochs": epochs, "min_local_steps": 0}
        self.config = type(federated).model_validate(plain)
        self.local_objective = LocalObjective()
        try:
            return self.train(data, 0, seed)
        finally:
            self.config = federated

    def train(self, data: SiteData, round_index: int, seed: int) -> TrainResult:
        split = data.train
        n = split.num_examples
        if n == 0:
            return TrainResult(num_examples=0, train_loss=0.0)
        seed_torch(seed, self.device)
        generator = torch.Generator().manual_seed(seed)
        x = torch.from_numpy(split.x).to(self.device)
        y = torch.from_numpy(split.y.astype(np.float32)).to(self.device)
        loss_fn = nn.BCEWithLogitsLoss(
            pos_weight=torch.tensor(self._pos_weight(split.y), device=self.device)
        )
        optimizer = self._optimizer()
        bs = self.config.batch_size
        private = self.privacy.make_private(self.model, optimizer, n, bs, self.device) if (
            self.privacy) else None  # fmt: skip
        optimizer = private.optimizer if private else optimizer  # Opacus: clip, noise, account
        self.model.train()
        loss_total, batches = 0.0, 0
        for _ in range(self.local_epochs(n)):
            order = torch.randperm(n, generator=generator).to(self.device)
            epoch = private.batches(self.device) if private else torch.split(order, bs)  # Poisson?
            for index in epoch:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(self.model(x[index]), y[index])
                torch.autograd.backward(self.local_objective.adjust_loss(self.model, loss))
                self.local_objective.adjust_gradients(self.model)
                optimizer.step()
                loss_total += float(loss.detach()) if index.numel() else 0.0
                batches += 1
        return TrainResult(num_examples=n, train_loss=loss_total / max(batches, 1))
