"""Sample-level DP at a hospital: DP-SGD through Opacus, with an accountant that survives restarts.

This is the hospital's edge of ``fl_core.privacy``: it holds no privacy formula. At client
start ``open_hospital_privacy`` resolves the hospital's settings and has
``fl_core.privacy.plan_dp_sgd`` check them against its data (delta < 1/rows, a given noise
multiplier keeps the target epsilon over the planned rounds) or derive the noise multiplier.
``HospitalPrivacy`` then holds the plan and the accountant. During a round, ``make_private``
hands the trainer Opacus's ``DPOptimizer`` and a Poisson-sampled ``DPDataLoader`` of row
indices (``PrivacyEngine`` with ``wrap_model=False``: the model keeps its own tensor names, so
no ``_module.`` prefix can leak into the update file). After the round the accountant's
history is saved as JSON in the hospital's own state folder, before the update is written.

The noise and the Poisson sample come from secret random seeds, never from the federation
seed: a party who knows the seed (the coordinating centre) could otherwise subtract the noise.
So DP-SGD rounds are not bit-reproducible; that is the price of the guarantee. The generators
are torch's (seeded from ``secrets``), not a CSPRNG: Opacus's ``secure_mode`` needs
torchcsprng, which is not packaged for this torch.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fl_core.config import FederationConfig
from fl_core.errors import ConfigError
from fl_core.exchange.manifests import SitePrivacy
from fl_core.privacy import (
    Accountant,
    DpSgdConfig,
    DpSgdPlan,
    check_dp_sgd_strategy,
    plan_dp_sgd,
)

log = structlog.get_logger("fedsilo.client")

# said once in the docstring above, not on every round of every hospital
warnings.filterwarnings("ignore", message="Secure RNG turned off", module="opacus")
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha", module="opacus")
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients")

STATE_FILE = "dp_sgd_accountant.json"
"""The accountant of a state folder from before accountants were kept per federation: read
as a federation's starting spend when its own file is absent (over-counting, never under)."""
STATE_VERSION = 1


def accountant_path(state_dir: Path, federation_id: str) -> Path:
    """One accountant per federation: a state folder may serve several studies at once, and
    the site policy's ledger (``fl_client.privacy_ledger``) adds their epsilons."""
    return state_dir / f"dp_sgd_accountant.{federation_id}.json"


def _secret_generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


@dataclass
class PrivateRound:
    """The Opacus objects one round trains through; ``close`` removes Opacus's hooks."""

    optimizer: torch.optim.Optimizer
    loader: DataLoader[Any]
    hooks: Any

    def batches(self, device: torch.device) -> list[torch.Tensor]:
        """One epoch of Poisson-sampled row indices (a batch may be empty)."""
        return [index.to(device) for (index,) in self.loader]

    def close(self) -> None:
        self.hooks.cleanup()


class HospitalPrivacy:
    """One hospital's DP-SGD settings, plan, and accountant (saved in its state folder)."""

    def __init__(
        self,
        site_id: str,
        settings: DpSgdConfig,
        plan: DpSgdPlan,
        state_dir: Path | None,
        federation_id: str,
    ) -> None:
        self.site_id = site_id
        self.federation_id = federation_id
        self.settings = settings
        self.plan = plan
        self.state_path = None if state_dir is None else accountant_path(state_dir, federation_id)
        self.shared_path = None if state_dir is None else state_dir / STATE_FILE
        self.accountant = Accountant()
        self.rounds_trained: list[int] = []
        self._open: PrivateRound | None = None
        self._load()

    # ---- persistence ----------------------------------------------------------------------

    def _load(self) -> None:
        found = next((p for p in (self.state_path, self.shared_path) if p and p.is_file()), None)
        if found is None:
            return
        try:
            saved = json.loads(found.read_text())
            if saved.get("version") != STATE_VERSION or saved.get("site_id") != self.site_id:
                raise ValueError(f"version/site {saved.get('version')}/{saved.get('site_id')}")
            self.accountant.load_state_dict(saved["accountant"])
            self.rounds_trained = [int(r) for r in saved.get("rounds_trained", [])]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"DP-SGD state {found} of site {self.site_id} cannot be read ({err}); "
                "restore it from backup: deleting it would forget the privacy already spent"
            ) from err
        log.info(
            "dp_sgd_state_restored",
            site_id=self.site_id,
            epsilon=self.epsilon(),
            rounds_trained=len(self.rounds_trained),
        )

    def save(self) -> None:
        """Atomically replace the state file (write, fsync, rename)."""
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "version": STATE_VERSION,
            "site_id": self.site_id,
            "accountant": self.accountant.state_dict(),
            "rounds_trained": self.rounds_trained,
            "epsilon": self.epsilon(),
            "delta": self.settings.delta,
            "target_epsilon": self.settings.target_epsilon,
            "noise_multiplier": self.plan.noise_multiplier,
        }
        scratch = self.state_path.with_suffix(".json.tmp")
        with open(scratch, "w") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, self.state_path)

    # ---- the budget -------------------------------------------------------------------------

    def epsilon(self) -> float:
        """Epsilon spent so far at this hospital's delta."""
        return self.accountant.epsilon(self.settings.delta)

    def epsilon_after_round(self) -> float:
        """What the accountant would say after one more round of this plan."""
        twin = self.accountant.copy()
        twin.step(
            noise_multiplier=self.plan.noise_multiplier,
            sample_rate=self.plan.sample_rate,
            steps=self.plan.steps_per_round,
        )
        return twin.epsilon(self.settings.delta)

    def spent(self) -> SitePrivacy:
        return SitePrivacy(
            epsilon=self.epsilon(),
            delta=self.settings.delta,
            target_epsilon=self.settings.target_epsilon,
            noise_multiplier=self.plan.noise_multiplier,
            steps=self.accountant.steps,
        )

    # ---- one round --------------------------------------------------------------------------

    def make_private(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, num_examples: int,
        batch_size: int, device: torch.device,
    ) -> PrivateRound:  # fmt: skip
        """Opacus's optimizer and Poisson loader for one round; steps go to our accountant."""
        from opacus import PrivacyEngine
        from opacus.validators.errors import UnsupportedModuleError

        model.train()  # Opacus refuses a module in eval mode (evaluation ran just before)
        engine = PrivacyEngine(accountant="rdp")
        engine.accountant = self.accountant.opacus
        rows = DataLoader(
            TensorDataset(torch.arange(num_examples)),
            batch_size=batch_size,
            generator=_secret_generator(torch.device("cpu")),
        )
        try:
            hooks, private_optimizer, loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=rows,
                noise_multiplier=self.plan.noise_multiplier,
                max_grad_norm=self.settings.max_grad_norm,
                poisson_sampling=True,
                noise_generator=_secret_generator(device),
                wrap_model=False,
            )
        except UnsupportedModuleError as err:
            raise ConfigError(
                f"privacy.dp_sgd: Opacus cannot compute per-sample gradients of "
                f"{type(model).__name__} ({err}); replace the unsupported layers (e.g. "
                "BatchNorm by GroupNorm) or drop privacy.dp_sgd"
            ) from err
        self._open = PrivateRound(private_optimizer, loader, hooks)
        return self._open

    def close_round(self) -> None:
        """Remove Opacus's hooks from the model (the trainer serves other hospitals next)."""
        if self._open is not None:
            self._open.close()
            self._open = None

    def record_round(self, round_index: int) -> None:
        """After training: remember the round and save the accountant before anything leaves."""
        self.rounds_trained.append(round_index)
        self.save()
        log.info(
            "dp_sgd_round_spent",
            site_id=self.site_id,
            round_index=round_index,
            epsilon=self.epsilon(),
            target_epsilon=self.settings.target_epsilon,
        )


def open_hospital_privacy(
    config: FederationConfig,
    site_id: str,
    num_examples: int,
    batch_size: int,
    epochs: int,
    state_dir: Path | None,
) -> HospitalPrivacy | None:
    """The hospital's DP-SGD state at client start, or None when DP-SGD is off.

    Raises ``ConfigError`` (exit 2) when the settings cannot be met for this hospital.
    """
    dp_sgd = config.privacy.dp_sgd
    if dp_sgd is None:
        return None
    check_dp_sgd_strategy(config.strategy.name)
    if num_examples == 0:
        log.info("dp_sgd_nothing_to_protect", site_id=site_id, reason="no training rows")
        return None  # it never trains, so it spends nothing
    settings = dp_sgd.for_site(site_id)
    plan = plan_dp_sgd(
        settings,
        site_id=site_id,
        num_examples=num_examples,
        batch_size=batch_size,
        epochs=epochs,
        rounds=config.rounds,
    )
    if state_dir is None:  # a simulation; `client run` requires a state folder
        log.info(
            "dp_sgd_state_in_memory",
            site_id=site_id,
            hint="give the hospital a state folder so its spent budget survives a restart",
        )
    privacy = HospitalPrivacy(site_id, settings, plan, state_dir, config.federation_id)
    log.info(
        "dp_sgd_ready",
        site_id=site_id,
        **asdict(plan),
        epsilon=privacy.epsilon(),
        target_epsilon=settings.target_epsilon,
    )
    return privacy
