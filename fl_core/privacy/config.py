"""Differential privacy settings: the typed configs and the checks that refuse bad ones.

A privacy setting that cannot be met must stop the federation before any data is touched, with
a message that names the field and the fix: a delta of 1/n or more (which allows releasing a
whole record), a noise multiplier too low for the target epsilon, or DP combined with a
strategy that undoes it. Checks that need the hospitals run when they are known: at config
load when the config lists them, at the aggregator when it invites them, at client start for
a hospital's row count (``plan_dp_sgd``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fl_core.errors import ConfigError
from fl_core.privacy.mechanisms import calibrate_noise, poisson_schedule

DP_FEDAVG_STRATEGIES = ("fedavg", "fedprox")
"""Strategies whose server side is plain FedAvg, so DP-FedAvg can replace it."""
DP_SGD_EXCLUSIVE_STRATEGIES = ("fedprox", "scaffold")
"""Strategies whose local objective changes gradients outside Opacus's per-sample clipping."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DpSgdSiteSettings(_Frozen):
    """One hospital's own DP-SGD settings; anything left out comes from ``privacy.dp_sgd``."""

    target_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    delta: float | None = Field(default=None, gt=0, lt=1)
    max_grad_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    noise_multiplier: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    rounds: int | None = Field(default=None, ge=1)


class DpSgdConfig(_Frozen):
    """Sample-level DP at every hospital: DP-SGD (Opacus, Poisson sampling).

    The noise multiplier is derived from ``target_epsilon`` over the rounds the budget is
    planned for (``rounds``, default the federation's); a given ``noise_multiplier`` must
    keep the target over those rounds or the config is refused. A hospital whose next round
    would exceed its target declines that round (``privacy_budget_exhausted``).
    """

    target_epsilon: float = Field(gt=0, allow_inf_nan=False)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    noise_multiplier: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    rounds: int | None = Field(
        default=None, ge=1, description="rounds the budget is planned over (default: all)"
    )
    sites: dict[str, DpSgdSiteSettings] = Field(
        default_factory=dict, description="per-hospital overrides keyed by site id"
    )

    def for_site(self, site_id: str) -> DpSgdConfig:
        """This hospital's settings: the federation's, overridden by its own entry."""
        override = self.sites.get(site_id)
        given = {} if override is None else override.model_dump(exclude_none=True)
        # validated, so an override is held to the federation's own bounds
        return DpSgdConfig.model_validate(
            {**self.model_dump(exclude={"sites"}), **given, "sites": {}}
        )


class DpFedAvgConfig(_Frozen):
    """Client-level DP at the aggregator (DP-FedAvg, McMahan et al. 2018).

    Each hospital's delta from the global model is clipped to ``clip_norm`` (L2 over every
    tensor but ``exclude_tensors``), the clipped deltas are summed, Gaussian noise of std
    ``noise_multiplier * clip_norm`` is added once, and the sum is divided by the number of
    invited sites (a fixed denominator, so one hospital moves the model by at most
    ``clip_norm / n``). Give ``noise_multiplier``, ``target_epsilon``, or both (then the
    noise must keep the target over the federation's rounds).
    """

    clip_norm: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    noise_multiplier: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    target_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    delta: float = Field(default=1e-3, gt=0, lt=1)
    exclude_tensors: tuple[str, ...] = Field(
        default=("input_mean", "input_std", "risk_intercept", "risk_slope"),
        description="tensors kept at the global value: set before round 1, never trained",
    )

    @model_validator(mode="after")
    def _noise_or_target(self) -> DpFedAvgConfig:
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError("give privacy.dp_fedavg.noise_multiplier or target_epsilon (or both)")
        return self


# ---- setting checks (run at config load, at client start, and when the sites are known) ----


def check_delta(*, what: str, delta: float, population: int, unit: str) -> None:
    """DP with delta >= 1/n may release a whole record (or site): refuse it."""
    if population < 1:
        raise ConfigError(f"{what}: no {unit} to protect")
    if delta >= 1.0 / population:
        raise ConfigError(
            f"{what}: delta {delta} >= 1/n = 1/{population} {unit}; such a delta allows "
            f"releasing a whole record; use delta < {1.0 / population:.3g} (e.g. "
            f"{10 ** math.floor(math.log10(0.1 / population)):.0e})"
        )


def dp_fedavg_noise(config: DpFedAvgConfig, *, rounds: int, sample_rate: float = 1.0) -> float:
    """DP-FedAvg's noise multiplier: given, derived from the target, and checked."""
    return calibrate_noise(
        what="privacy.dp_fedavg",
        noise_multiplier=config.noise_multiplier,
        target_epsilon=config.target_epsilon,
        delta=config.delta,
        sample_rate=sample_rate,
        steps=rounds,
    )


def check_dp_settings(
    dp_fedavg: DpFedAvgConfig | None,
    *,
    rounds: int,
    strategy: str,
    num_sites: int | None,
    secure_aggregation: bool = False,
) -> None:
    """Cross-field checks run at config load (``ConfigError``, exit 2, names the fix).

    ``num_sites`` is None when the hospitals are not known yet (prepared folders); the
    aggregator repeats the delta check when it learns them. Per-hospital DP-SGD checks that
    need the hospital's row count run at client start (``fl_client.private``).
    """
    if dp_fedavg is not None:
        if secure_aggregation:
            raise ConfigError(
                "privacy.dp_fedavg clips each hospital's update at the aggregator, which "
                "secure aggregation hides from it: the two are exclusive; with privacy.secagg "
                "use privacy.dp_sgd (each hospital adds its own noise) instead"
            )
        if strategy not in DP_FEDAVG_STRATEGIES:
            raise ConfigError(
                f"privacy.dp_fedavg replaces the server's FedAvg and cannot be combined with "
                f"strategy {strategy!r}; use strategy fedavg or fedprox with dp_fedavg, or "
                "drop dp_fedavg (dp_sgd combines with every strategy)"
            )
        if num_sites is not None:
            check_delta(
                what="privacy.dp_fedavg",
                delta=dp_fedavg.delta,
                population=num_sites,
                unit="sites",
            )
        dp_fedavg_noise(dp_fedavg, rounds=rounds)


def check_dp_sgd_strategy(strategy: str) -> None:
    """DP-SGD's guarantee holds only if Opacus clips every gradient the hospital applies."""
    if strategy in DP_SGD_EXCLUSIVE_STRATEGIES:
        raise ConfigError(
            f"privacy.dp_sgd cannot run with strategy {strategy!r}: its local "
            "objective changes the gradients outside Opacus's per-sample clipping; use "
            "fedavg, fedavgm, fedadam/yogi/adagrad or a robust strategy with dp_sgd"
        )


@dataclass(frozen=True)
class DpSgdPlan:
    """What one round of DP-SGD costs at this hospital."""

    noise_multiplier: float
    sample_rate: float  # Poisson rate: expected batch / rows = 1 / batches per epoch
    steps_per_round: int
    planned_rounds: int


def plan_dp_sgd(
    settings: DpSgdConfig, *, site_id: str, num_examples: int, batch_size: int, epochs: int,
    rounds: int,
) -> DpSgdPlan:  # fmt: skip
    """Check the settings against this hospital's data and derive the noise multiplier."""
    what = f"privacy.dp_sgd for site {site_id}"
    check_delta(what=what, delta=settings.delta, population=num_examples, unit="training rows")
    sample_rate, steps_per_round = poisson_schedule(
        num_examples=num_examples, batch_size=batch_size, epochs=epochs
    )
    planned = settings.rounds or rounds
    noise = calibrate_noise(
        what=what,
        noise_multiplier=settings.noise_multiplier,
        target_epsilon=settings.target_epsilon,
        delta=settings.delta,
        sample_rate=sample_rate,
        steps=steps_per_round * planned,
    )
    return DpSgdPlan(noise, sample_rate, steps_per_round, planned)
