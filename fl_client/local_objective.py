"""What a round adds to a hospital's local objective beyond its data: FedProx and SCAFFOLD.

Both are small pieces any ``ClientTrainer`` can call inside its own loop::

    loss = objective.adjust_loss(model, loss)   # before loss.backward()
    loss.backward()
    objective.adjust_gradients(model)           # after backward, before optimizer.step()

The hospital loop sets ``trainer.local_objective`` before every ``train`` call; the default
(``LocalObjective``) changes nothing, so a trainer that always calls both hooks works under
every strategy.

FedProx (Li et al. 2020) adds ``(mu/2) * ||w - w_global||^2`` to the loss. SCAFFOLD
(Karimireddy et al. 2020) adds ``c - c_i`` to every gradient and reports the new ``c_i``.
Its option II is ``c_i+ = c_i - c + (x - y_i) / (K * eta)``: under plain SGD the displacement
``x - y_i`` is ``eta`` times the sum of the K corrected gradients, so option II equals the mean
of the K uncorrected mini-batch gradients seen along the local trajectory. We compute that mean
directly: it is option II exactly under plain SGD (a test checks it) and, with momentum or
Adam, where ``(x - y_i) / (K * eta)`` is not a gradient at all (momentum inflates it by up to
``1 / (1 - beta)``), it stays what ``c_i`` is meant to be, the hospital's average gradient.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fl_core.types import Weights


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters that receive gradients, by their ``state_dict`` name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def proximal_term(model: nn.Module, anchor: Mapping[str, torch.Tensor], mu: float) -> torch.Tensor:
    """``(mu/2) * sum_k ||w_k - anchor_k||^2`` over the trainable parameters named in ``anchor``.

    Its gradient with respect to ``w_k`` is ``mu * (w_k - anchor_k)``; ``anchor`` must be
    detached (it is the round's global model, a constant of the local problem).
    """
    params = trainable_parameters(model)
    device = next(iter(params.values())).device if params else torch.device("cpu")
    total = torch.zeros((), device=device)
    for name, weight in params.items():
        if name in anchor:
            total = total + (weight - anchor[name]).pow(2).sum()
    return 0.5 * mu * total


class LocalObjective:
    """The plain local objective: data loss only (FedAvg and the server-side strategies)."""

    def adjust_loss(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        """The loss to differentiate, given the data loss of one mini-batch."""
        return loss

    def adjust_gradients(self, model: nn.Module) -> None:
        """Change ``p.grad`` in place after ``backward`` and before the optimizer step."""


def _tensors(weights: Weights, names: set[str], device: torch.device) -> dict[str, torch.Tensor]:
    return {
        name: torch.as_tensor(np.array(weights[name]), device=device)
        for name in names
        if name in weights
    }


class ProximalObjective(LocalObjective):
    """FedProx: the data loss plus ``(mu/2) * ||w - w_global||^2``."""

    def __init__(self, model: nn.Module, global_model: Weights, mu: float) -> None:
        params = trainable_parameters(model)
        device = next(iter(params.values())).device if params else torch.device("cpu")
        self.mu = mu
        self.anchor = _tensors(global_model, set(params), device)

    def adjust_loss(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        return loss + proximal_term(model, self.anchor, self.mu)


class ScaffoldObjective(LocalObjective):
    """SCAFFOLD's local step: ``grad + c - c_i``, recording the uncorrected gradients.

    ``server_control`` and ``client_control`` map model tensor names to ``c`` and ``c_i``;
    tensors that are not trainable parameters here are left alone (their ``c_i`` stays).
    """

    def __init__(self, model: nn.Module, server_control: Weights, client_control: Weights) -> None:
        params = trainable_parameters(model)
        device = next(iter(params.values())).device if params else torch.device("cpu")
        names = set(params) & set(server_control) & set(client_control)
        c = _tensors(server_control, names, device)
        c_i = _tensors(client_control, names, device)
        self.correction = {name: c[name] - c_i[name] for name in names}
        self.gradient_sums = {name: torch.zeros_like(c[name]) for name in names}
        self.steps = 0

    def adjust_gradients(self, model: nn.Module) -> None:
        for name, weight in trainable_parameters(model).items():
            correction = self.correction.get(name)
            if correction is None or weight.grad is None:
                continue
            self.gradient_sums[name] += weight.grad
            weight.grad.add_(correction)
        self.steps += 1

    def mean_gradients(self) -> dict[str, npt.NDArray[np.float32]]:
        """``c_i+``: the mean uncorrected gradient over this round's local steps."""
        if self.steps == 0:
            raise ValueError("no local steps were recorded")
        return {
            name: (total / self.steps).detach().cpu().numpy().astype(np.float32)
            for name, total in self.gradient_sums.items()
        }
