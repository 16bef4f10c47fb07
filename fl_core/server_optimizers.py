"""Server optimizers on the pseudo-gradient: FedAvgM, FedAdam, FedYogi, FedAdagrad.

After FedAvg, ``delta = mean - global`` is treated as a gradient step and fed to an optimizer
kept at the server, which speeds up and steadies training on hospitals whose data differ
(Reddi et al. 2021). One optimizer step for one tensor is the pure function
``server_optimizer_step``; the aggregator (``fl_server.strategies.server_opt``) streams the
mean, calls it per tensor, and saves the moments in ``state.json``.

- FedAvgM (Hsu et al. 2019): ``m = momentum * m + delta``, direction ``m``.
- FedAdam / FedYogi / FedAdagrad (Reddi et al. 2021, Algorithm 2):
  ``m = b1 * m + (1 - b1) * delta`` and direction ``m / (sqrt(v) + tau)``, with
  ``v = b2 * v + (1 - b2) * delta**2`` (Adam),
  ``v = v - (1 - b2) * delta**2 * sign(v - delta**2)`` (Yogi), ``v = v + delta**2`` (Adagrad).
- ``bias_correction`` divides by Adam's zero-start factors (Kingma & Ba 2015, as Flower's
  FedAdam does): ``m / (1 - b1**t)``, and for Adam and Yogi ``v / (1 - b2**t)``. Without it
  the first rounds move ``1 - b1`` as far as the moments' steady state, and Adagrad's ``v``,
  which only grows, never lets it catch up.

The moments are float32 (half the state of float64), and the direction is computed from the
float32 moments as they will be saved: a restarted aggregator then continues bit for bit.
Arithmetic is float64.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from fl_core.errors import AggregationError

Float32 = npt.NDArray[np.float32]
Float64 = npt.NDArray[np.float64]
ServerOptimizerRule = Literal["fedavgm", "fedadam", "fedyogi", "fedadagrad"]
ADAPTIVE_RULES = ("fedadam", "fedyogi", "fedadagrad")


def server_optimizer_step(
    *,
    rule: ServerOptimizerRule,
    delta: Float64,
    m: Float32 | None,
    v: Float32 | None,
    beta1: float,
    beta2: float,
    tau: float,
    bias_correction: bool,
    step: int,
) -> tuple[Float64, Float32, Float32 | None]:
    """One step for one tensor: ``(direction, new m, new v)``.

    ``m`` and ``v`` are the saved moments (None before the first step: zero); ``step`` counts
    this round's step from 1. ``new v`` is None for FedAvgM, which keeps no second moment. The
    caller moves the tensor by ``server_learning_rate * direction``.
    """
    if step < 1:
        raise AggregationError(f"server optimizer steps count from 1, got {step}")
    zeros = np.zeros(delta.shape, np.float32)
    m_old = (zeros if m is None else m).astype(np.float64)
    if rule == "fedavgm":
        m_new = (beta1 * m_old + delta).astype(np.float32)
        momentum: Float64 = m_new.astype(np.float64)
        return momentum, m_new, None
    if rule not in ADAPTIVE_RULES:
        raise AggregationError(f"unknown server optimizer {rule!r}; use one of {ADAPTIVE_RULES}")
    m_next = beta1 * m_old + (1.0 - beta1) * delta
    v_old = (zeros if v is None else v).astype(np.float64)
    squared = delta * delta
    if rule == "fedadam":
        v_next = beta2 * v_old + (1.0 - beta2) * squared
    elif rule == "fedyogi":
        v_next = v_old - (1.0 - beta2) * squared * np.sign(v_old - squared)
    else:  # fedadagrad
        v_next = v_old + squared
    m32 = m_next.astype(np.float32)
    v32 = v_next.astype(np.float32)
    m_hat = m32.astype(np.float64)
    v_hat = v32.astype(np.float64)
    if bias_correction:
        m_hat = m_hat / (1.0 - beta1**step)
        if rule != "fedadagrad":  # Adagrad's v is a plain sum: no zero-start decay
            v_hat = v_hat / (1.0 - beta2**step)
    direction: Float64 = m_hat / (np.sqrt(np.maximum(v_hat, 0.0)) + tau)
    return direction, m32, v32
