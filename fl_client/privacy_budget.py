"""A hospital's privacy budget: train a round only if its epsilon stays within the target.

Before a training round the hospital asks its accountant what epsilon it would have spent
after this round's steps. If that exceeds its target it does not train: it answers the round
with a manifest that carries no weights, ``declined="privacy_budget_exhausted"`` and the
numbers, which the aggregator records as a ``declined`` decision (the round closes without
waiting for it, and ``fedsilo status`` and the report say why). It still evaluates the global
model on its test split, which spends no training budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog
from pydantic import ValidationError

from fl_client.private import HospitalPrivacy, open_hospital_privacy
from fl_client.trainer import ClientTrainer
from fl_client.trainer_protocol import PrivateTrainer
from fl_core.config import FederationConfig, describe_validation_error
from fl_core.errors import ConfigError
from fl_core.exchange.manifests import UpdateManifest
from fl_core.privacy import within_target

log = structlog.get_logger("fedsilo.client")


def trainer_privacy(
    trainer: ClientTrainer,
    config: FederationConfig,
    site_id: str,
    rows: int,
    state_dir: Path | None,
) -> HospitalPrivacy | None:
    """At client start: check a hospital's DP-SGD settings and restore its accountant.

    None when DP-SGD is off. ``rows``: the hospital's training rows, from which the
    accountant plans the steps of a round.
    """
    if config.privacy.dp_sgd is None:
        return None
    if not isinstance(trainer, PrivateTrainer):
        raise ConfigError(
            f"privacy.dp_sgd needs a trainer that trains through fl_client.private (the "
            f"default TabularTrainer); {type(trainer).__name__} does not: drop privacy.dp_sgd "
            "or use the default trainer"
        )
    epochs = int(trainer.local_epochs(rows))
    batch_size = config.training.batch_size
    return open_hospital_privacy(config, site_id, rows, batch_size, epochs, state_dir)


def refuse_over_budget(
    privacy: HospitalPrivacy | None, update: UpdateManifest
) -> UpdateManifest | None:
    """The declined answer when this round would exceed the budget; None to go on training."""
    if privacy is None:
        return None
    after = privacy.epsilon_after_round()
    target = privacy.settings.target_epsilon
    if within_target(epsilon=after, target_epsilon=target):
        return None
    spent = privacy.epsilon()
    detail = (
        f"site {update.site_id} round {update.round_index}: training would raise epsilon from "
        f"{spent:.3g} to {after:.3g}, above its target {target:.3g} (delta "
        f"{privacy.settings.delta:g}); it trains no more rounds. Raising target_epsilon needs "
        "the data owner's approval"
    )
    log.warning(
        "privacy_budget_exhausted",
        site_id=update.site_id,
        round_index=update.round_index,
        epsilon=spent,
        epsilon_after=after,
        target_epsilon=target,
    )
    return UpdateManifest.model_validate(
        {
            **update.model_dump(),
            "task": "train",
            "declined": "privacy_budget_exhausted",
            "declined_detail": detail,
            "privacy": privacy.spent(),
        }
    )


@contextmanager
def private_training(
    trainer: ClientTrainer, privacy: HospitalPrivacy | None, round_index: int
) -> Iterator[None]:
    """Train through DP-SGD for this round, then save the accountant (before the update leaves).

    The trainer serves several hospitals in turn, so the hospital's privacy is bound only for
    the duration of its own round.
    """
    if privacy is None:
        yield
        return
    if not isinstance(trainer, PrivateTrainer):  # trainer_privacy refused it at client start
        raise ConfigError(f"{type(trainer).__name__} cannot train under DP-SGD")
    trainer.privacy = privacy
    try:
        yield
    except BaseException:
        privacy.save()  # steps taken before the failure are spent all the same
        raise
    finally:
        trainer.privacy = None
        privacy.close_round()
    privacy.record_round(round_index)


def with_hospital_dp(
    config: FederationConfig,
    *,
    target_epsilon: float | None,
    delta: float | None,
    max_grad_norm: float | None,
) -> FederationConfig:
    """The config with this hospital's own DP-SGD settings (``fedsilo client run --dp-*``).

    Sample-level DP is the hospital's own decision: it may turn DP-SGD on, or tighten it,
    whatever the federation's file says.
    """
    given = {
        key: value
        for key, value in (
            ("target_epsilon", target_epsilon),
            ("delta", delta),
            ("max_grad_norm", max_grad_norm),
        )
        if value is not None
    }
    if not given:
        return config
    tree = config.model_dump(mode="json")
    tree["privacy"]["dp_sgd"] = {**(tree["privacy"].get("dp_sgd") or {}), **given}
    try:
        return FederationConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, "the --dp-* options")) from err


def require_state_dir(config: FederationConfig, state_dir: Path | None) -> None:
    """A deployed hospital with DP-SGD must keep its accountant on persistent storage."""
    if config.privacy.dp_sgd is not None and state_dir is None:
        raise ConfigError(
            "privacy.dp_sgd is on but this hospital has no state folder: its spent privacy "
            "budget would be forgotten on restart; pass --state-dir DIR (FEDSILO_STATE_DIR) "
            "on a persistent volume"
        )
