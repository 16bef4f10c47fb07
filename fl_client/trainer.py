"""``ClientTrainer``: what a user subclasses to bring their own training to fedsilo.

The shape follows FedML's ``ClientTrainer``: it holds the model, trains it in place on one
hospital's data, and evaluates it. The hospital loop handles everything that crosses the
boundary (download, verify, encode, write once); a trainer never sees the exchange.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fl_client.local_objective import LocalObjective
from fl_core.data.base import SiteData, Split
from fl_core.exchange.histograms import histogram_document
from fl_core.exchange.manifests import EvaluationReport
from fl_core.metrics import ClassHistogram
from fl_core.models import load_model_weights, model_weights
from fl_core.types import SiteId, Weights


def derive_seed(seed: int, site_id: SiteId, round_index: int) -> int:
    """A seed per (federation seed, site, round) that does not depend on Python's hash salt."""
    digest = hashlib.sha256(f"{seed}:{site_id}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def seed_torch(seed: int, device: torch.device) -> None:
    """Seed the generators that training on ``device`` draws from (dropout, init).

    Not ``torch.manual_seed``: while CUDA is not initialised it queues a CUDA seeding with a
    formatted stack trace on every call, a cost paid again in each of thousands of hospital
    rounds on a CPU-only machine. The CPU generator gets the same seed, so CPU training draws
    the same numbers as under ``torch.manual_seed``.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


def pick_device(preference: str) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass(frozen=True)
class TrainResult:
    num_examples: int
    train_loss: float
    metrics: dict[str, float] = field(default_factory=dict)


class ClientTrainer(ABC):
    """Subclass and implement ``train``; override ``predict_proba`` for non-logit models.

    Strategies that change the local objective (FedProx's proximal term, SCAFFOLD's gradient
    correction) reach ``train`` through ``self.local_objective``, which the hospital loop sets
    before every round (``fl_client.local_objective``). A custom ``train`` supports them by
    calling, per mini-batch::

        loss = self.local_objective.adjust_loss(self.model, loss)  # before backward()
        loss.backward()
        self.local_objective.adjust_gradients(self.model)  # before optimizer.step()

    Under FedAvg and the server-side strategies both calls change nothing. SCAFFOLD refuses a
    trainer that never calls ``adjust_gradients``. Personalisation calls ``finetune``.
    """

    def __init__(self, model: nn.Module, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device)
        self.local_objective: LocalObjective = LocalObjective()

    def get_weights(self) -> Weights:
        return model_weights(self.model)

    def set_weights(self, weights: Weights) -> None:
        load_model_weights(self.model, weights)

    @abstractmethod
    def train(self, data: SiteData, round_index: int, seed: int) -> TrainResult:
        """Train ``self.model`` in place on ``data.train`` for one round."""

    def finetune(self, data: SiteData, epochs: int, seed: int) -> TrainResult:
        """Personalisation: fit the current (final global) model to this hospital's data.

        The default runs ``train`` ``epochs`` times with the plain objective; override it when
        one ``train`` call is not one epoch (``TabularTrainer`` does).
        """
        self.local_objective = LocalObjective()
        result = TrainResult(num_examples=data.train.num_examples, train_loss=0.0)
        for epoch in range(epochs):
            result = self.train(data, 0, seed + epoch)
        return result

    @torch.no_grad()
    def predict_proba(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Predicted risk per row; the default treats the model output as a logit."""
        self.model.eval()
        logits = self.model(torch.from_numpy(x).to(self.device))
        return torch.sigmoid(logits.double()).cpu().numpy()

    def evaluate(self, split: Split, num_bins: int) -> EvaluationReport:
        """Counts, loss sum and class histograms of the current model on one split."""
        if split.num_examples == 0:
            empty = histogram_document(ClassHistogram.empty(num_bins))
            return EvaluationReport(num_examples=0, loss_sum=0.0, histogram=empty)
        risk = self.predict_proba(split.x)
        clipped = np.clip(risk, 1e-12, 1 - 1e-12)
        labels = split.y.astype(np.float64)
        loss_sum = float(-(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)).sum())
        reference = {
            name: histogram_document(ClassHistogram.from_scores(scores, split.y, num_bins))
            for name, scores in split.reference_scores.items()
        }
        return EvaluationReport(
            num_examples=split.num_examples,
            loss_sum=loss_sum,
            histogram=histogram_document(ClassHistogram.from_scores(risk, split.y, num_bins)),
            reference=reference,
        )
