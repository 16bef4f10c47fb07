"""The federation's published model: the final round's global model with its recalibration.

Training may end before ``config.rounds`` (early stopping, recorded as ``stopped_early`` in
the round's ``result.json``); the final evaluation round is the one after it. That round's
result carries the Platt scaling fitted on the summed validation histograms
(``fl_server.validation_round``); the published model file holds it in its
``risk_intercept``/``risk_slope`` tensors, so whoever loads the model reads calibrated risks.
"""

from __future__ import annotations

from fl_core.control_variates import split_controls
from fl_core.errors import FedsiloError
from fl_core.exchange.protocol import Exchange
from fl_core.recalibration import PlattScaling, carries_scaling, with_scaling
from fl_core.serialisation import decode_weights
from fl_core.types import Weights


def final_round(exchange: Exchange, rounds: int) -> int:
    """The final evaluation round: after the round that stopped early, else ``rounds + 1``."""
    for round_index in range(1, rounds + 1):
        result = exchange.read_result(round_index)
        if result is None:
            break
        if result.stopped_early:
            return round_index + 1
    return rounds + 1


def published_weights(exchange: Exchange, rounds: int) -> Weights:
    """The final global model (SCAFFOLD's controls left in the exchange), recalibrated."""
    round_index = final_round(exchange, rounds)
    manifest = exchange.read_global_manifest(round_index)
    if manifest is None:
        raise FedsiloError("the federation ended without a final model; see the log")
    weights, _controls = split_controls(decode_weights(exchange.read_global_weights(manifest)))
    result = exchange.read_result(round_index)
    fitted = None if result is None else result.recalibration
    if fitted is None or not carries_scaling(weights):
        return weights
    return with_scaling(weights, PlattScaling(intercept=fitted.intercept, slope=fitted.slope))
