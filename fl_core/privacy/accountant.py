"""The privacy accountant: epsilon spent so far, saved as JSON every round.

Every number here comes from Opacus's RDP accountant (``RDPAccountant``) and its
``get_noise_multiplier``; nothing is a hand-written privacy formula, because a hand-written
one is the easiest place for an unnoticed error that overstates the guarantee. ``Accountant``
wraps Opacus's accountant so that its history can be saved as JSON (a hospital's own state
folder, or the aggregator's ``strategy_state``) and a restart resumes the privacy spent so far
instead of starting again from zero.

Opacus is imported lazily: a federation without DP never pays for loading it.
"""

from __future__ import annotations

from typing import Any

from fl_core.errors import ConfigError

EPSILON_SLACK = 1e-9
"""Float noise allowed when an epsilon lands exactly on its target."""


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
        """Spend ``steps`` steps of the subsampled Gaussian mechanism."""
        for _ in range(steps):
            self._opacus.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)

    @property
    def steps(self) -> int:
        """Steps spent so far, over every noise and sample rate."""
        return sum(int(entry[2]) for entry in self._opacus.history)

    def epsilon(self, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0 before the first step)."""
        if not self._opacus.history:
            return 0.0
        return float(self._opacus.get_epsilon(delta=delta))

    def copy(self) -> Accountant:
        """An independent twin (to ask what one more round would cost)."""
        twin = Accountant()
        twin.load_state_dict(self.state_dict())
        return twin

    def state_dict(self) -> dict[str, Any]:
        """The history as JSON-ready lists ``[noise_multiplier, sample_rate, steps]``."""
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


def within_target(*, epsilon: float, target_epsilon: float) -> bool:
    """Whether ``epsilon`` keeps ``target_epsilon`` (up to ``EPSILON_SLACK`` of float noise)."""
    return epsilon <= target_epsilon + EPSILON_SLACK
