"""Round 1's model: standardised by the hospitals' moments, and started from a prior logit.

Every way of building a first model goes through ``start_model``: the federation's round 1
(``initial_model_weights``) and the yardsticks it is compared with (pooled and local-only
training), so that what they compare differs in where the data is, not in how the model began.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fl_core.config import FederationConfig
from fl_core.data.standardise import FeatureMoments, combine_moments
from fl_core.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn


def start_model(
    model: nn.Module,
    config: FederationConfig,
    feature_names: Sequence[str],
    moments: Sequence[FeatureMoments],
) -> None:
    """Set ``model``'s standardisation from ``moments`` and, where the config names
    ``training.logit_offset``, start it as that input's logit (``TabularMLP.start_from_logit``)."""
    set_standardisation = getattr(model, "set_standardisation", None)
    if callable(set_standardisation):
        set_standardisation(*combine_moments(list(moments)))
    offset = config.training.logit_offset
    if offset is None:
        return
    if offset not in feature_names:
        raise ConfigError(
            f"training.logit_offset names {offset!r}, which is not one of the model's "
            f"{len(feature_names)} inputs; prepare the data with it (fedsilo data prepare "
            "--features apache) or remove the setting"
        )
    start_from_logit = getattr(model, "start_from_logit", None)
    if not callable(start_from_logit):
        raise ConfigError(
            f"training.logit_offset: the app's model ({type(model).__name__}) cannot start "
            "from an input's logit; remove the setting or use the default model"
        )
    start_from_logit(list(feature_names).index(offset))
