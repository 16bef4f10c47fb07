"""Personalisation: after the last round, fine-tune the final global model at each hospital.

With ``personalisation.finetune_epochs > 0``, a hospital answering the final (evaluation)
round scores the global model on its test split as usual, then fine-tunes a copy on its own
training split and scores that on the same test split. Only the second histogram joins the
answer (``EvaluationReport.finetuned``); the fine-tuned weights stay in the hospital's memory
and are discarded (the trainer is reset to the global model).
"""

from __future__ import annotations

from fl_client.trainer import ClientTrainer, derive_seed
from fl_core.config import FederationConfig
from fl_core.data.base import SiteData
from fl_core.exchange.manifests import EvaluationReport
from fl_core.types import Weights


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
    epochs = config.personalisation.finetune_epochs
    if epochs == 0:
        return global_report
    global_weights: Weights = trainer.get_weights()
    try:
        seed = derive_seed(config.seed, f"{data.site_id}/finetune", round_index)
        trainer.finetune(data, epochs, seed)
        finetuned = trainer.evaluate(data.test, config.evaluation.histogram_bins)
    finally:
        trainer.set_weights(global_weights)
    return EvaluationReport.model_validate({**global_report.model_dump(), "finetuned": finetuned})
