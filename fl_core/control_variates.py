"""SCAFFOLD's control variates as extra tensors of the global model and of every update.

SCAFFOLD (Karimireddy et al. 2020) exchanges a server control variate ``c`` and, per hospital,
a control delta. Rather than a second protocol, they travel as tensors named
``scaffold.c.<tensor name>`` inside the same safetensors files, so the same sha256, size limit
and admission (names, shapes, dtypes, finite) cover them. Only the naming and the server-side
arithmetic live here (pure numpy); hospitals and the aggregator call these.

A control tensor exists for every floating-point tensor of the model. The aggregator only sees
arrays, not which of them a hospital trains: for a buffer (e.g. the standardisation moments)
no hospital ever reports a non-zero delta, so its control stays zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fl_core.errors import AggregationError
from fl_core.types import Weights

CONTROL_PREFIX = "scaffold.c."


def control_name(name: str) -> str:
    """The control tensor's name for model tensor ``name``."""
    return CONTROL_PREFIX + name


def has_controls(weights: Mapping[str, npt.NDArray[np.generic]]) -> bool:
    return any(name.startswith(CONTROL_PREFIX) for name in weights)


def split_controls(weights: Mapping[str, npt.NDArray[np.generic]]) -> tuple[Weights, Weights]:
    """(model tensors, control tensors keyed by their model tensor's name)."""
    model: Weights = {}
    controls: Weights = {}
    for name, array in weights.items():
        if name.startswith(CONTROL_PREFIX):
            controls[name.removeprefix(CONTROL_PREFIX)] = array
        else:
            model[name] = array
    unknown = sorted(controls.keys() - model.keys())
    if unknown:
        raise AggregationError(
            f"control tensors {unknown[:3]} name no model tensor; the file was not written by "
            "a SCAFFOLD federation of this model"
        )
    return model, controls


def join_controls(model: Weights, controls: Mapping[str, npt.NDArray[np.generic]]) -> Weights:
    """Model tensors plus ``scaffold.c.*`` tensors (what a SCAFFOLD file holds)."""
    joined = dict(model)
    joined.update({control_name(name): np.asarray(array) for name, array in controls.items()})
    return joined


def zero_controls(model: Mapping[str, npt.NDArray[np.generic]]) -> Weights:
    """A zero control for every floating-point model tensor (SCAFFOLD starts from c = 0)."""
    return {
        name: np.zeros_like(array)
        for name, array in model.items()
        if np.issubdtype(array.dtype, np.floating)
    }


def server_step(
    *,
    global_model: Mapping[str, npt.NDArray[np.generic]],
    mean_model: Mapping[str, npt.NDArray[np.generic]],
    server_control: Mapping[str, npt.NDArray[np.generic]],
    control_delta_sum: Mapping[str, npt.NDArray[np.generic]],
    num_sites: int,
    server_learning_rate: float,
) -> tuple[Weights, Weights]:
    """SCAFFOLD's server update (Algorithm 1, lines 16-17).

    ``x <- x + eta_g * (mean(y_i) - x)`` and ``c <- c + (1/N) * sum(delta c_i)``, which is
    ``c + (|S|/N) * mean(delta c_i)``. Arithmetic is float64, results keep each tensor's dtype;
    a non-floating tensor (a step counter) takes the mean model's value.
    """
    if num_sites <= 0:
        raise AggregationError(f"SCAFFOLD needs N > 0 hospitals, got {num_sites}")
    model: Weights = {}
    for name, x in global_model.items():
        y = mean_model[name]
        if not np.issubdtype(x.dtype, np.floating):
            model[name] = np.asarray(y)
            continue
        x64 = x.astype(np.float64)
        step = x64 + server_learning_rate * (y.astype(np.float64) - x64)
        model[name] = step.astype(x.dtype)
    controls: Weights = {}
    for name, c in server_control.items():
        moved = c.astype(np.float64) + control_delta_sum[name].astype(np.float64) / num_sites
        controls[name] = moved.astype(c.dtype)
    return model, controls
