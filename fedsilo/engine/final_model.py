"""The federation's published model: the final round's global model with its recalibration.

Training may end before ``config.rounds`` (early stopping, recorded as ``stopped_early`` in
the round's ``result.json``); the final evaluation round is the one after it. That round's
result carries the Platt scaling fitted on the summed validation histograms
(``fl_server.validation_round``); the published model file holds it in its
``risk_intercept``/``risk_slope`` tensors, so whoever loads the model reads calibrated risks.

The aggregator writes that model into the exchange when the final round closes
(``fl_server.published_model``); the run folder takes those very bytes. Exchanges written
before it did are read as they were: the same model, derived here.
"""

from __future__ import annotations

from fl_core.errors import FedsiloError
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.published import model_of, published_bytes, scaling_to_apply
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


def published_model_bytes(exchange: Exchange, rounds: int) -> bytes:
    """The published model's file (SCAFFOLD's controls left in the exchange), recalibrated."""
    published = exchange.read_published_manifest()
    if published is not None:
        return exchange.read_published_weights(published)
    round_index = final_round(exchange, rounds)
    manifest = exchange.read_global_manifest(round_index)
    if manifest is None:
        raise FedsiloError("the federation ended without a final model; see the log")
    global_bytes = exchange.read_global_weights(manifest)
    result = exchange.read_result(round_index)
    fitted = None if result is None else result.recalibration
    return published_bytes(global_bytes, scaling_to_apply(model_of(global_bytes), fitted))


def published_weights(exchange: Exchange, rounds: int) -> Weights:
    """The published model's tensors (``published_model_bytes``)."""
    return decode_weights(published_model_bytes(exchange, rounds))
