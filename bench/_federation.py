"""The federation that the framework comparison runs three times: data, model, one local step.

Why a shared module: the plain PyTorch floor (``bench/plain_loop.py``) and the Flower client
(``bench/flower/flower_sim.py``, run in the separate Flower environment) must train exactly
what ``fedsilo simulate`` trains, or the comparison measures different work. So both take
the hospitals from the same ``SyntheticSource``, the initial model from the same seeded
``TabularMLP`` with the federated standardisation, and the local round from fedsilo's own
``TabularTrainer`` with the same per-(site, round) seed. Only the orchestration around it
(processes, messages, exchange, verification) differs, which is what the benchmark is about.

This module imports only numpy, torch, scikit-learn, pydantic and ``fl_core``/``fl_client``
(no boto3, structlog or fedsilo), so it also loads inside the Flower environment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import roc_auc_score

from fl_client.tabular import TabularTrainer
from fl_client.trainer import derive_seed, pick_device
from fl_core.config import DataConfig, FederationConfig, SyntheticDataConfig
from fl_core.data.base import SiteData
from fl_core.data.standardise import FeatureMoments, combine_moments
from fl_core.data.synthetic import FEATURES, SyntheticSource
from fl_core.models import TabularMLP, model_weights
from fl_core.types import Weights


def benchmark_config(
    hospitals: int, rounds: int, mean_stays: int = 1500, seed: int = 0
) -> FederationConfig:
    """The federation all three runs use: ``make run``'s defaults with the sizes given.

    The deadline is generous so that a slow machine never turns into a missing site.
    """
    return FederationConfig(
        federation_id="bench-compare",
        rounds=rounds,
        seed=seed,
        data=DataConfig(synthetic=SyntheticDataConfig(hospitals=hospitals, mean_stays=mean_stays)),
    )


def synthetic_source(config: FederationConfig) -> SyntheticSource:
    synthetic = config.data.synthetic
    seed = config.seed if synthetic.seed is None else synthetic.seed
    return SyntheticSource(synthetic.hospitals, synthetic.mean_stays, seed)


def load_site(config: FederationConfig, index: int) -> SiteData:
    """Hospital ``index`` (0-based; Flower's partition id) of the synthetic source."""
    source = synthetic_source(config)
    return source.load_site(source.site_ids()[index])


def load_sites(config: FederationConfig) -> list[SiteData]:
    source = synthetic_source(config)
    return [source.load_site(site_id) for site_id in source.site_ids()]


def initial_weights(config: FederationConfig, sites: Sequence[SiteData]) -> Weights:
    """The round-1 global model as ``fedsilo simulate`` builds it (same seed, same moments)."""
    torch.manual_seed(config.seed)
    model = new_model(config)
    mean, std = combine_moments([FeatureMoments.of(site.train.x) for site in sites])
    model.set_standardisation(mean, std)
    return model_weights(model)


def new_model(config: FederationConfig) -> TabularMLP:
    return TabularMLP(
        len(FEATURES),
        config.training.hidden_sizes,
        config.training.dropout,
        config.training.linear_skip,
        config.training.logit_offset is not None,
    )


def new_trainer(config: FederationConfig) -> TabularTrainer:
    """fedsilo's default trainer on the device fedsilo would pick."""
    return TabularTrainer(new_model(config), config.training, pick_device(config.training.device))


def train_site(
    trainer: TabularTrainer,
    site: SiteData,
    global_weights: Weights,
    config: FederationConfig,
    round_index: int,
) -> tuple[Weights, int, float]:
    """One hospital's local round from the global model: (weights, num_examples, loss)."""
    trainer.set_weights(global_weights)
    result = trainer.train(site, round_index, derive_seed(config.seed, site.site_id, round_index))
    return trainer.get_weights(), result.num_examples, result.train_loss


def weighted_average(updates: Sequence[tuple[Weights, int]]) -> Weights:
    """FedAvg by hand: sum of ``num_examples``-weighted tensors in float64, then divide."""
    total = float(sum(n for _, n in updates))
    first = updates[0][0]
    sums = {name: np.zeros(array.shape, np.float64) for name, array in first.items()}
    for weights, n in updates:
        for name, acc in sums.items():
            acc += weights[name].astype(np.float64) * n
    return {name: (acc / total).astype(first[name].dtype) for name, acc in sums.items()}


def pooled_scores(
    trainer: TabularTrainer, weights: Weights, sites: Sequence[SiteData]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]:
    """Predicted risk and labels of every hospital's test split, concatenated."""
    trainer.set_weights(weights)
    scores = [trainer.predict_proba(site.test.x) for site in sites if site.test.num_examples]
    labels = [site.test.y for site in sites if site.test.num_examples]
    return np.concatenate(scores), np.concatenate(labels)


def pooled_auroc(trainer: TabularTrainer, weights: Weights, sites: Sequence[SiteData]) -> float:
    """Exact AUROC (scikit-learn) of ``weights`` on the pooled test splits."""
    scores, labels = pooled_scores(trainer, weights, sites)
    return float(roc_auc_score(labels, scores))
