"""Shared by the strategy tests: hand an aggregator updates the way the round loop does."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fl_core.serialisation import decode_weights, encode_weights, view_weights
from fl_server.aggregator import AdmittedUpdate, ServerAggregator

Update = tuple[str, dict[str, np.ndarray], int]


def admitted(site_id: str, weights: dict[str, np.ndarray], num_examples: int) -> AdmittedUpdate:
    """Verified bytes and their zero-copy views, as admission hands them over."""
    data = encode_weights(weights)
    return AdmittedUpdate(site_id, num_examples, data, view_weights(data))


def aggregate(
    aggregator: ServerAggregator,
    global_weights: dict[str, np.ndarray],
    updates: Sequence[Update],
    round_index: int = 1,
) -> dict[str, np.ndarray]:
    # the global model as the round loop holds it: decoded from its file (a 0-d tensor is
    # stored with shape (1,) by the codec, like every update's)
    aggregator.begin_round(round_index, decode_weights(encode_weights(global_weights)))
    for site_id, weights, num_examples in updates:
        aggregator.add_admitted(admitted(site_id, weights, num_examples))
    return aggregator.finish()


def assert_models_close(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol: float = 1e-6, atol: float = 1e-6
) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, err_msg=name)
