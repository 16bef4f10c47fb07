"""The federation's published model, derived from the final global model: pure, numpy only.

The aggregator writes it, ``fedsilo ledger verify`` derives it again to check it, and the
run folder reads it: all three go through ``published_bytes``, so one derivation is the
definition of what the exchange's published model must hold.
"""

from __future__ import annotations

from fl_core.control_variates import split_controls
from fl_core.exchange.manifests import AppliedScaling, Recalibration
from fl_core.recalibration import PlattScaling, carries_scaling, with_scaling
from fl_core.serialisation import decode_weights, encode_weights
from fl_core.types import Weights


def model_of(global_bytes: bytes) -> Weights:
    """The global model's own tensors: SCAFFOLD's controls serve training, not its users."""
    model, _controls = split_controls(decode_weights(global_bytes))
    return model


def scaling_to_apply(model: Weights, recalibration: Recalibration | None) -> AppliedScaling | None:
    """The final round's recalibration where the model can carry it; None leaves it as is
    (no scaling fitted, or an app's own model without the scaling tensors)."""
    if recalibration is None or not carries_scaling(model):
        return None
    return AppliedScaling(intercept=recalibration.intercept, slope=recalibration.slope)


def published_bytes(global_bytes: bytes, scaling: AppliedScaling | None) -> bytes:
    """The published model's file: the global model, controls stripped, ``scaling`` applied."""
    model = model_of(global_bytes)
    if scaling is not None:
        model = with_scaling(model, PlattScaling(intercept=scaling.intercept, slope=scaling.slope))
    return encode_weights(model)
