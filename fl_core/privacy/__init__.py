"""Differential privacy in three parts, so that each can be audited on its own.

- ``config``: the typed DP settings (``DpSgdConfig``, ``DpFedAvgConfig``) and the checks that
  refuse a setting that cannot be met, naming the fix.
- ``accountant``: the epsilon spent so far (Opacus's RDP accountant, saved every round).
- ``mechanisms``: clipping, Gaussian noise and noise calibration, as pure functions with
  keyword-only arguments.

The hospital (``fl_client.private``) and the aggregator (``fl_server.dp_fedavg``) call these;
they hold no privacy formula of their own. Every public name is importable from
``fl_core.privacy`` directly.
"""

from __future__ import annotations

from fl_core.privacy.accountant import (
    EPSILON_SLACK,
    Accountant,
    epsilon_for,
    noise_for_target,
    within_target,
)
from fl_core.privacy.config import (
    DP_FEDAVG_STRATEGIES,
    DP_SGD_EXCLUSIVE_STRATEGIES,
    DpFedAvgConfig,
    DpSgdConfig,
    DpSgdPlan,
    DpSgdSiteSettings,
    check_delta,
    check_dp_settings,
    check_dp_sgd_strategy,
    dp_fedavg_noise,
    plan_dp_sgd,
)
from fl_core.privacy.mechanisms import (
    calibrate_noise,
    check_noise_keeps_target,
    clip_factor,
    delta_norm,
    l2_norm,
    noise_std,
    noisy_mean,
    poisson_schedule,
)

__all__ = [
    "DP_FEDAVG_STRATEGIES",
    "DP_SGD_EXCLUSIVE_STRATEGIES",
    "EPSILON_SLACK",
    "Accountant",
    "DpFedAvgConfig",
    "DpSgdConfig",
    "DpSgdPlan",
    "DpSgdSiteSettings",
    "calibrate_noise",
    "check_delta",
    "check_dp_settings",
    "check_dp_sgd_strategy",
    "check_noise_keeps_target",
    "clip_factor",
    "delta_norm",
    "dp_fedavg_noise",
    "epsilon_for",
    "l2_norm",
    "noise_for_target",
    "noise_std",
    "noisy_mean",
    "plan_dp_sgd",
    "poisson_schedule",
    "within_target",
]
