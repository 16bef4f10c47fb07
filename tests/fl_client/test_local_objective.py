"""FedProx's term and SCAFFOLD's local step, checked against autograd and the paper's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fl_client.local_objective import (
    LocalObjective,
    ProximalObjective,
    ScaffoldObjective,
    proximal_term,
)
from fl_client.local_round import LocalRound
from fl_client.trainer import TrainResult
from fl_core.errors import ConfigError
from fl_core.models import TabularMLP, model_weights


def _model(seed: int = 0) -> TabularMLP:
    torch.manual_seed(seed)
    return TabularMLP(5, (4,), dropout=0.0)


def _anchor(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_proximal_term_is_zero_at_the_global_model():
    model = _model()
    assert float(proximal_term(model, _anchor(model), mu=3.0).detach()) == 0.0


def test_proximal_gradient_is_mu_times_distance():
    model = _model()
    anchor = _anchor(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    mu = 0.7
    params = list(model.named_parameters())
    grads = torch.autograd.grad(proximal_term(model, anchor, mu), [p for _, p in params])
    for (name, p), grad in zip(params, grads, strict=True):
        torch.testing.assert_close(grad, mu * (p.detach() - anchor[name]))
    expected = 0.5 * mu * sum(float((p.detach() - anchor[n]).pow(2).sum()) for n, p in params)
    assert float(proximal_term(model, anchor, mu).detach()) == pytest.approx(expected, rel=1e-6)


def test_proximal_objective_adds_the_term_to_the_loss():
    model = _model()
    objective = ProximalObjective(model, model_weights(model), mu=1.0)
    loss = torch.tensor(0.25)
    assert float(objective.adjust_loss(model, loss).detach()) == pytest.approx(0.25)
    with torch.no_grad():
        model.net[0].bias.add_(1.0)
    assert float(objective.adjust_loss(model, loss).detach()) == pytest.approx(0.25 + 0.5 * 4)


def _controls(model: nn.Module, scale: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        n: (scale * rng.normal(size=p.shape)).astype(np.float32)
        for n, p in model.named_parameters()
    }


def test_scaffold_step_adds_c_minus_ci_and_records_the_raw_gradient():
    model = _model()
    c, c_i = _controls(model, 0.1, 1), _controls(model, 0.1, 2)
    objective = ScaffoldObjective(model, c, c_i)
    x = torch.randn(8, 5)
    model(x).sum().backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    objective.adjust_gradients(model)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, raw[name] + torch.from_numpy(c[name] - c_i[name]))
    means = objective.mean_gradients()
    for name in raw:
        np.testing.assert_allclose(means[name], raw[name].numpy(), rtol=1e-6)


def test_mean_gradient_is_option_two_under_plain_sgd():
    """c_i+ = c_i - c + (x - y_i) / (K * eta) (Karimireddy et al., eq. 4 option II)."""
    model = _model()
    x0 = model_weights(model)
    c, c_i = _controls(model, 0.05, 3), _controls(model, 0.05, 4)
    objective = ScaffoldObjective(model, c, c_i)
    eta, steps = 0.05, 7
    optimizer = torch.optim.SGD(model.parameters(), lr=eta)
    generator = torch.Generator().manual_seed(0)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(steps):
        features = torch.randn(16, 5, generator=generator)
        labels = (torch.rand(16, generator=generator) > 0.5).float()
        optimizer.zero_grad()
        objective.adjust_loss(model, loss_fn(model(features), labels)).backward()
        objective.adjust_gradients(model)
        optimizer.step()
    y = model_weights(model)
    means = objective.mean_gradients()
    for name in c:
        option_two = c_i[name] - c[name] + (x0[name] - y[name]) / (steps * eta)
        np.testing.assert_allclose(means[name], option_two, rtol=1e-4, atol=1e-5)


def test_plain_objective_changes_nothing():
    model = _model()
    objective = LocalObjective()
    loss = torch.tensor(1.5)
    assert objective.adjust_loss(model, loss) is loss
    model(torch.randn(3, 5)).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    objective.adjust_gradients(model)
    for g, p in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g)


def test_scaffold_refuses_a_trainer_that_skips_the_gradient_hook():
    model = _model()
    c = _controls(model, 0.0, 0)
    local = LocalRound(
        site_id="site-a",
        federation_id="f",
        round_index=2,
        objective=ScaffoldObjective(model, c, c),
        client_control=c,
    )
    with pytest.raises(ConfigError, match="adjust_gradients"):
        local.outgoing(model_weights(model), TrainResult(num_examples=10, train_loss=0.1))
    # no data at this hospital: no steps is fine, and the control delta is zero
    empty = local.outgoing(model_weights(model), TrainResult(num_examples=0, train_loss=0.0))
    assert all(not empty[f"scaffold.c.{n}"].any() for n in c)
