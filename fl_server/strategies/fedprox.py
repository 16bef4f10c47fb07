"""FedProx on the server is FedAvg: the proximal term lives in each hospital's local loss.

Li et al. 2020 change only the client objective (``fl_client.local_objective``); the
aggregate is the example-weighted mean. Registering "fedprox" here keeps ``strategy.name``
the single switch for both sides.
"""

from __future__ import annotations

from fl_core.config import FederationConfig
from fl_server.aggregator import FedAvgAggregator, ServerAggregator
from fl_server.strategies import register


def _build(config: FederationConfig) -> ServerAggregator:
    return FedAvgAggregator()


register("fedprox", _build)
