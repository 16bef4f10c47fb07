"""Reference points for a federation, trained the same way: pooled data and each site alone.

Pooling patients is exactly what a federation avoids; these exist only inside a simulation,
to measure what federating costs (pooled) and what it gains (local-only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedsilo.engine.app import FederatedApp
from fedsilo.engine.model_start import start_model
from fl_client.trainer import ClientTrainer, derive_seed
from fl_core.config import FederationConfig
from fl_core.data.base import SiteData, Split
from fl_core.data.standardise import FeatureMoments
from fl_core.metrics import exact_auroc


def _fresh_trainer(app: FederatedApp, config: FederationConfig, site: SiteData) -> ClientTrainer:
    """A trainer whose model starts as the federation's does, from ``site``'s training rows."""
    torch.manual_seed(config.seed)
    trainer = app.build_trainer(site.train.x.shape[1], config)
    start_model(trainer.model, config, site.feature_names, [FeatureMoments.of(site.train.x)])
    return trainer


def _concat(splits: Sequence[Split]) -> Split:
    return Split(x=np.concatenate([s.x for s in splits]), y=np.concatenate([s.y for s in splits]))


@dataclass(frozen=True)
class BaselineResult:
    pooled_auroc: float | None
    local_mean_auroc: float | None
    local_sites_scored: int


def pooled_predictions(
    app: FederatedApp, config: FederationConfig, sites: Sequence[SiteData]
) -> np.ndarray:
    """Predicted risk on every site's test rows (in site order) of one model trained on all
    the sites' training rows, one ``train`` call per round, as a single site would."""
    train = _concat([s.train for s in sites])
    test = _concat([s.test for s in sites])
    pooled = SiteData(
        "pooled", sites[0].feature_names, train, _concat([s.valid for s in sites]), test
    )
    trainer = _fresh_trainer(app, config, pooled)
    for round_index in range(1, config.rounds + 1):
        trainer.train(pooled, round_index, derive_seed(config.seed, "pooled", round_index))
    return trainer.predict_proba(test.x)


def pooled_auroc(
    app: FederatedApp, config: FederationConfig, sites: Sequence[SiteData]
) -> float | None:
    """AUROC on the pooled test rows of ``pooled_predictions``."""
    test = _concat([s.test for s in sites])
    return exact_auroc(pooled_predictions(app, config, sites), test.y)


def local_only_predictions(
    app: FederatedApp, config: FederationConfig, sites: Sequence[SiteData]
) -> dict[str, np.ndarray]:
    """Per site with training and test rows: its test rows' risk from a model of its own.

    Each model is trained on its site's training rows alone, ``config.rounds`` train calls,
    as that hospital would train outside the federation (one class only is kept: that is
    what such a hospital has).
    """
    predictions = {}
    for site in sites:
        if site.test.num_examples == 0 or site.train.num_examples == 0:
            continue
        trainer = _fresh_trainer(app, config, site)
        for round_index in range(1, config.rounds + 1):
            trainer.train(site, round_index, derive_seed(config.seed, site.site_id, round_index))
        predictions[site.site_id] = trainer.predict_proba(site.test.x)
    return predictions


def local_only_aurocs(
    app: FederatedApp, config: FederationConfig, sites: Sequence[SiteData]
) -> list[float]:
    """Each site trained alone, scored on its own test split (sites with one class skipped)."""
    scorable = [s for s in sites if s.test.num_examples and s.test.y.min() != s.test.y.max()]
    predictions = local_only_predictions(app, config, scorable)
    scores = []
    for site in scorable:
        if site.site_id not in predictions:
            continue
        auroc = exact_auroc(predictions[site.site_id], site.test.y)
        if auroc is not None:
            scores.append(auroc)
    return scores


def federated_test_auroc(
    app: FederatedApp,
    config: FederationConfig,
    weights: dict[str, np.ndarray],
    sites: Sequence[SiteData],
) -> float | None:
    """Exact pooled-test AUROC of a final federated model (to bound the histogram error)."""
    test = _concat([s.test for s in sites])
    trainer = app.build_trainer(test.x.shape[1], config)
    trainer.set_weights(weights)
    return exact_auroc(trainer.predict_proba(test.x), test.y)
