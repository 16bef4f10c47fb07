"""Differential privacy: typed settings, pure accounting formulas, and a saveable accountant.

Every number here comes from Opacus's accountants (``RDPAccountant`` and
``get_noise_multiplier``); nothing is a hand-written privacy formula. The formulas are pure
functions with keyword-only arguments; ``Accountant`` wraps Opacus's accountant so that its
history can be saved as JSON every round (a hospital's own state dir, or the aggregator's
``strategy_state``) and a restart resumes the privacy spent so far.

Opacus is imported lazily: a federation without DP never pays for loading it.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fl_core.errors import ConfigError

# strategies whose server side is plain FedAvg, so DP-FedAvg can replace it
DP_FEDAVG_STRATEGIES = ("fedavg", "fedprox")
_EPSILON_SLACK = 1e-9  # float noise when an epsilon lands exactly on its target


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
        if override is None:
            return self.model_copy(update={"sites": {}})
        given = override.model_dump(exclude_none=True)
        return self.model_copy(update={**given, "sites": {}})


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
        default=("input_mean", "input_std"),
        description="tensors kept at the global value: set before round 1, never trained",
    )

    @model_validator(mode="after")
    def _noise_or_target(self) -> DpFedAvgConfig:
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError("give privacy.dp_fedavg.noise_multiplier or target_epsilon (or both)")
        return self


# ---- pure formulas (all through Opacus) ---------------------------------------------------


def epsilon_for(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon after ``steps`` steps of the subsampled Gaussian mechanism (Opacus RDP)."""
    accountant = Accountant()
    accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    return accountant.epsilon(delta)


def noise_for_target(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int
) -> float:
    """The noise multiplier that keeps ``target_epsilon`` after ``steps`` steps (Opacus)."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
            )
        )
    except ValueError as err:  # Opacus: the target cannot be reached at any noise
        raise ConfigError(
            f"target epsilon {target_epsilon} with delta {delta} over {steps} steps at "
            f"sample rate {sample_rate:.4g} is out of reach ({err}); raise the target "
            "epsilon or plan fewer rounds"
        ) from err


def check_noise_keeps_target(
    *,
    what: str,
    noise_multiplier: float,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
) -> float:
    """Epsilon the noise spends over ``steps``; ``ConfigError`` when it exceeds the target."""
    spent = epsilon_for(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta
    )
    if spent > target_epsilon + _EPSILON_SLACK:
        needed = noise_for_target(
            target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate, steps=steps
        )
        raise ConfigError(
            f"{what}: noise_multiplier {noise_multiplier} is too low to keep target epsilon "
            f"{target_epsilon} (delta {delta}) over {steps} steps: it spends {spent:.3g}; "
            f"use noise_multiplier >= {needed:.3g}, leave it out to derive it, or raise "
            "target_epsilon"
        )
    return spent


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
    if config.noise_multiplier is None:
        assert config.target_epsilon is not None  # the model validator ensures one of the two
        return noise_for_target(
            target_epsilon=config.target_epsilon,
            delta=config.delta,
            sample_rate=sample_rate,
            steps=rounds,
        )
    if config.target_epsilon is not None:
        check_noise_keeps_target(
            what="privacy.dp_fedavg",
            noise_multiplier=config.noise_multiplier,
            target_epsilon=config.target_epsilon,
            delta=config.delta,
            sample_rate=sample_rate,
            steps=rounds,
        )
    return config.noise_multiplier


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


# ---- the accountant -------------------------------------------------------------------------


class Accountant:
    """Opacus's RDP accountant with a JSON ``state_dict`` (saved every round)."""

    mechanism = "rdp"

    def __init__(self) -> None:
        from opacus.accountants import RDPAccountant

        self._opacus = RDPAccountant()

    @property
    def opacus(self) -> Any:
        """The wrapped Opacus accountant (what ``PrivacyEngine`` steps during DP-SGD)."""
        return self._opacus

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        for _ in range(steps):
            self._opacus.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)

    @property
    def steps(self) -> int:
        return sum(int(entry[2]) for entry in self._opacus.history)

    def epsilon(self, delta: float) -> float:
        if not self._opacus.history:
            return 0.0
        return float(self._opacus.get_epsilon(delta=delta))

    def copy(self) -> Accountant:
        twin = Accountant()
        twin.load_state_dict(self.state_dict())
        return twin

    def state_dict(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism,
            "history": [
                [float(sigma), float(rate), int(count)]
                for sigma, rate, count in self._opacus.history
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved history; a state that is not ours is refused, never guessed."""
        if state.get("mechanism") != self.mechanism:
            raise ConfigError(
                f"saved accountant uses mechanism {state.get('mechanism')!r}, expected "
                f"{self.mechanism!r}; the state file is not from this version of fedsilo"
            )
        history = []
        for entry in state.get("history", []):
            sigma, rate, count = entry
            if not (sigma > 0 and 0 < rate <= 1 and int(count) >= 1):
                raise ConfigError(f"saved accountant history entry {entry!r} is invalid")
            history.append((float(sigma), float(rate), int(count)))
        self._opacus.history = history
