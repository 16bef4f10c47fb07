"""Round 1's model: standardised, and started from a prior logit where the config says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsilo.engine.app import default_model
from fedsilo.engine.model_start import start_model
from fl_core.config import load_config
from fl_core.data.standardise import FeatureMoments
from fl_core.errors import ConfigError

FEATURES = ("age", "apache_iva_logit", "apache_iva_missing")


def _moments() -> list[FeatureMoments]:
    rng = np.random.default_rng(0)
    return [FeatureMoments.of(rng.normal(size=(40, 3)) * [10.0, 1.5, 0.3]) for _ in range(2)]


def test_the_first_model_predicts_the_prior_logit_and_the_pooled_mean_where_none() -> None:
    config = load_config(overrides={"training.logit_offset": "apache_iva_logit"})
    torch.manual_seed(0)
    model = default_model(len(FEATURES), config)
    start_model(model, config, FEATURES, _moments())
    x = torch.tensor([[60.0, -2.0, 0.0], [70.0, float("nan"), 1.0]])
    model.eval()
    with torch.no_grad():
        logits = model(x).numpy()
    assert logits[0] == pytest.approx(-2.0, abs=1e-5)
    assert logits[1] == pytest.approx(float(model.input_mean[1]), abs=1e-5)


def test_an_offset_the_inputs_lack_or_a_model_that_cannot_start_from_it_is_refused() -> None:
    config = load_config(overrides={"training.logit_offset": "saps_logit"})
    with pytest.raises(ConfigError, match=r"saps_logit.*not one of the model's 3 inputs"):
        start_model(default_model(3, config), config, FEATURES, _moments())
    config = load_config(overrides={"training.logit_offset": "apache_iva_logit"})
    with pytest.raises(ConfigError, match="cannot start from an input's logit"):
        start_model(torch.nn.Linear(3, 1), config, FEATURES, _moments())
