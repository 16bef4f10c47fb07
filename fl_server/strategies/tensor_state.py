"""Server-side tensors (optimizer moments) as JSON text for ``state.json``'s ``strategy_state``.

``state.json`` is JSON, so tensors travel as base64 of a safetensors blob: the same codec as
every model file (no pickle), exact round trip (a resumed optimizer continues bit for bit),
and 4/3 of the raw bytes. The blob's sha256 is stored beside it so that a corrupted state is
refused rather than silently resumed from.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_core.errors import AggregationError, CodecError
from fl_core.hashing import sha256_hex
from fl_core.serialisation import decode_weights, encode_weights
from fl_core.types import Weights


def encode_tensor_state(tensors: Mapping[str, npt.NDArray[np.generic]]) -> dict[str, Any]:
    """``{"safetensors_b64": ..., "sha256": ...}`` for named arrays."""
    blob = encode_weights(tensors)
    return {"safetensors_b64": base64.b64encode(blob).decode("ascii"), "sha256": sha256_hex(blob)}


def decode_tensor_state(document: Any, owner: str) -> Weights:
    """The arrays ``encode_tensor_state`` wrote; ``owner`` names the strategy in errors."""
    if not isinstance(document, dict) or set(document) != {"safetensors_b64", "sha256"}:
        raise AggregationError(
            f"{owner} state in state.json is malformed; restore state.json from its bucket "
            "version or start a new federation_id"
        )
    try:
        blob = base64.b64decode(document["safetensors_b64"], validate=True)
    except (binascii.Error, TypeError, ValueError) as err:
        raise AggregationError(f"{owner} state in state.json is not base64: {err}") from err
    if sha256_hex(blob) != document["sha256"]:
        raise AggregationError(
            f"{owner} state in state.json fails its sha256; restore state.json from its "
            "bucket version"
        )
    try:
        return decode_weights(blob)
    except CodecError as err:
        raise AggregationError(f"{owner} state in state.json: {err}") from err
