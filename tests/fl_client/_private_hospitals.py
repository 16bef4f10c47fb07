"""Small federations for the privacy tests: a few synthetic hospitals of a few hundred rows."""

from __future__ import annotations

from typing import Any

from fedsilo.engine.app import DEFAULT_APP
from fl_client.hospital import Hospital
from fl_core.config import FederationConfig, load_config
from fl_core.data.synthetic import SyntheticSource

HOSPITALS = 3
MEAN_STAYS = 200


def dp_config(**overrides: Any) -> FederationConfig:
    base: dict[str, Any] = {
        "federation_id": "privacy",
        "rounds": 3,
        "data.synthetic.hospitals": HOSPITALS,
        "data.synthetic.mean_stays": MEAN_STAYS,
        "training.batch_size": 32,
        "training.local_epochs": 1,
        "training.min_local_steps": 0,
        "training.hidden_sizes": [8],
        "evaluation.histogram_bins": 50,
        "round.min_sites": 1,
        "round.deadline_s": 120.0,
        "round.poll_interval_s": 0.02,
    }
    base.update(overrides)
    return load_config(overrides=base)


def make_hospital(source: SyntheticSource, config: FederationConfig, index: int = 0, **kw: Any):
    data = source.load_site(source.site_ids()[index])
    trainer = DEFAULT_APP.build_trainer(len(source.feature_names()), config)
    return Hospital(data=data, trainer=trainer, **kw)
