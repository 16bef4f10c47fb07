"""Aggregation strategies: the config's ``strategy.name`` picks one ``ServerAggregator``.

Each strategy module registers a builder here, so the round loop and the CLI never name a
strategy class; a user who passes their own ``ServerAggregator`` bypasses this table.
"""

from __future__ import annotations

from collections.abc import Callable

from fl_core.config import FederationConfig
from fl_core.errors import ConfigError
from fl_server.aggregator import FedAvgAggregator, ServerAggregator

AggregatorBuilder = Callable[[FederationConfig], ServerAggregator]

_BUILDERS: dict[str, AggregatorBuilder] = {}


def register(name: str, builder: AggregatorBuilder) -> None:
    """Make ``strategy.name: name`` build the aggregator ``builder`` returns."""
    _BUILDERS[name] = builder


def _fedavg(config: FederationConfig) -> ServerAggregator:
    return FedAvgAggregator()


register("fedavg", _fedavg)


def build_aggregator(config: FederationConfig) -> ServerAggregator:
    """The aggregator the config names (strategy modules are imported for their builders)."""
    from fl_server.strategies import catalogue  # noqa: F401  (registers every strategy)

    if config.privacy.dp_fedavg is not None:  # replaces FedAvg's mean (fedavg, fedprox)
        from fl_server.dp_fedavg import build_dp_fedavg

        return build_dp_fedavg(config)
    name = config.strategy.name
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ConfigError(
            f"strategy.name {name!r} has no aggregator in this build; "
            f"use one of {sorted(_BUILDERS)}"
        )
    return builder(config)
