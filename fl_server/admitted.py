"""Reading an admitted update again (a resumed round, a sum begun again), byte-identical.

An admitted update's file is write-once and its sha256 is in the round's decision: reading it
again must give the very bytes that were admitted, or the exchange was altered and the round
must not be summed from it.
"""

from __future__ import annotations

from fl_core.errors import ExchangeError
from fl_core.exchange.manifests import Decision
from fl_core.exchange.protocol import Exchange
from fl_core.hashing import sha256_hex
from fl_core.serialisation import view_weights
from fl_server.aggregator import AdmittedUpdate


def reread_admitted(
    exchange: Exchange, round_index: int, decision: Decision, weight: int | None = None
) -> AdmittedUpdate:
    """``decision``'s update re-read and checked against its sha256 (the store's stored
    checksum where it vouches for one, else the bytes hashed); summed with ``weight``, or the
    rows it claimed."""
    data, stored = exchange.read_update_weights_verified(round_index, decision.site_id)
    if (stored or sha256_hex(data)) != decision.sha256:
        raise ExchangeError(
            f"admitted update of site {decision.site_id} round {round_index} changed after "
            "admission; the exchange was altered"
        )
    rows = decision.num_examples if weight is None else weight
    return AdmittedUpdate(decision.site_id, rows, data, view_weights(data))
