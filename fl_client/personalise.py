"""Personalisation: after the last round, adapt the final global model at each hospital.

With ``personalisation.finetune_epochs > 0`` or ``personalisation.local_intercept``, a
hospital answering the final (evaluation) round scores the global model on its test split as
usual, then adapts a copy on its own training split (every weight fine-tuned, and/or its
intercept refitted: ``fl_core.recalibration.local_intercept_shift``) and scores that on the
same test split. Only the second histogram joins the answer (``EvaluationReport.finetuned``);
the adapted weights stay in the hospital's memory and are discarded (the trainer is reset to
the global model).
"""

from __future__ import annotations

import numpy as np

from fl_client.trainer import ClientTrainer, derive_seed
from fl_core.config import FederationConfig
from fl_core.data.base import SiteData
from fl_core.errors import ConfigError
from fl_core.exchange.manifests import EvaluationReport
from fl_core.recalibration import (
    PlattScaling,
    carries_scaling,
    local_intercept_shift,
    with_scaling,
)
from fl_core.types import Weights

RISK_FLOOR = 1e-7
"""Risks are clipped to [floor, 1 - floor] before the logit: a float32 risk can be 0 or 1."""


def personalised_evaluation(
    trainer: ClientTrainer,
    data: SiteData,
    config: FederationConfig,
    round_index: int,
    global_report: EvaluationReport,
) -> EvaluationReport:
    """``global_report`` with the fine-tuned model's report attached (or unchanged when off).

    The trainer must hold the final global model; it holds it again on return.
    """
    personalisation = config.personalisation
    epochs = personalisation.finetune_epochs
    if epochs == 0 and not personalisation.local_intercept:
        return global_report
    global_weights: Weights = trainer.get_weights()
    try:
        if epochs:
            seed = derive_seed(config.seed, f"{data.site_id}/finetune", round_index)
            trainer.finetune(data, epochs, seed)
        if personalisation.local_intercept:
            refit_intercept(trainer, data, personalisation.local_intercept_prior_sd)
        finetuned = trainer.evaluate(data.test, config.evaluation.histogram_bins)
    finally:
        trainer.set_weights(global_weights)
    return EvaluationReport.model_validate({**global_report.model_dump(), "finetuned": finetuned})


def refit_intercept(trainer: ClientTrainer, data: SiteData, prior_sd: float) -> None:
    """Shift the trainer's model by the log-odds its hospital's training rows call for."""
    weights = trainer.get_weights()
    if not carries_scaling(weights):
        raise ConfigError(
            "personalisation.local_intercept needs a model with risk_intercept and risk_slope "
            "tensors (the default model has them); turn it off for this app's model"
        )
    if data.train.y.size == 0:
        return
    risk = np.clip(trainer.predict_proba(data.train.x), RISK_FLOOR, 1.0 - RISK_FLOOR)
    shift = local_intercept_shift(np.log(risk) - np.log1p(-risk), data.train.y, prior_sd)
    trainer.set_weights(with_scaling(weights, PlattScaling(intercept=shift, slope=1.0)))
