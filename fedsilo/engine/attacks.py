"""Hostile hospitals for red-team runs: does a strategy survive poisoned updates?

In the spirit of FedML's attack modules, ``hostile_app`` returns a ``FederatedApp`` whose
trainer is the honest one except at the named sites, which replace their trained model with
a poisoned one that still passes admission (same names, shapes and dtypes, finite):

- ``sign_flip``: ``global - scale * (trained - global)``: the update pushed the other way,
  ``scale`` times as far (``scale=10``: "sign-flipped and scaled x10").
- ``garbage``: every floating-point tensor set to the constant ``scale``.

Only model updates are poisoned; the evaluation a hostile site reports stays honest, so the
pooled metrics show what the poisoned model does to everyone. Use with
``fedsilo simulate --app`` or ``simulate(config, out, app=hostile_app(...))``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import nn

from fedsilo.engine.app import FederatedApp, TrainerFactory, default_trainer
from fl_client.trainer import ClientTrainer, TrainResult
from fl_core.config import FederationConfig
from fl_core.data.base import SiteData
from fl_core.types import Weights

AttackMode = Literal["sign_flip", "garbage"]


def poison(start: Weights, trained: Weights, mode: AttackMode, scale: float) -> Weights:
    """The hostile replacement of ``trained`` (integer buffers are left as trained)."""
    out: Weights = {}
    for name, value in trained.items():
        if not np.issubdtype(value.dtype, np.floating):
            out[name] = value
        elif mode == "sign_flip":
            begin = start[name].astype(np.float64)
            out[name] = (begin - scale * (value.astype(np.float64) - begin)).astype(value.dtype)
        else:
            out[name] = np.full(value.shape, scale, dtype=value.dtype)
    return out


def _poisoned_train(
    trainer: ClientTrainer,
    honest: Callable[[SiteData, int, int], TrainResult],
    sites: frozenset[str],
    mode: AttackMode,
    scale: float,
    data: SiteData,
    round_index: int,
    seed: int,
) -> TrainResult:
    start = trainer.get_weights()
    result = honest(data, round_index, seed)
    # round 0 is personalisation (local fine-tuning): nothing leaves the hospital there
    if data.site_id in sites and round_index >= 1:
        trainer.set_weights(poison(start, trainer.get_weights(), mode, scale))
    return result


def hostile_trainer(
    model: nn.Module,
    config: FederationConfig,
    device: torch.device,
    *,
    sites: frozenset[str],
    mode: AttackMode,
    scale: float,
    base: TrainerFactory = default_trainer,
) -> ClientTrainer:
    """The ``base`` trainer, whose ``train`` poisons its result at ``sites``.

    The honest trainer object itself is returned (not a wrapper), so everything the hospital
    loop sets on it (local objectives, personalisation) keeps working unchanged.
    """
    trainer = base(model, config, device)
    honest = trainer.train
    poisoned = functools.partial(_poisoned_train, trainer, honest, sites, mode, scale)
    setattr(trainer, "train", poisoned)  # noqa: B010  (an instance attribute shadows the method)
    return trainer


def hostile_app(
    sites: frozenset[str] | set[str],
    mode: AttackMode = "sign_flip",
    scale: float = 10.0,
    base: FederatedApp | None = None,
) -> FederatedApp:
    """``base`` (default: fedsilo's own app) with the named sites poisoning their updates."""
    app = base or FederatedApp()
    trainer = functools.partial(
        hostile_trainer, sites=frozenset(sites), mode=mode, scale=scale, base=app.trainer
    )
    return FederatedApp(model=app.model, trainer=trainer, aggregator=app.aggregator)
