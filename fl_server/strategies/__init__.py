"""Aggregation strategies: the config's ``strategy.name`` picks one ``ServerAggregator``.

``STRATEGIES`` is a static table keyed by exactly the names ``fl_core.config`` allows (a test
checks the two agree), so the round loop and the CLI never name a strategy class and nothing
depends on which modules happen to have been imported. The math lives in ``fl_core``
(``aggregation``, ``robust_aggregation``, ``server_optimizers``, ``control_variates``); the
modules here hold the stateful wrappers. A user who passes their own ``ServerAggregator`` to
the runner bypasses this table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

from fl_core.config import (
    FedAvgMStrategy,
    FederationConfig,
    FedOptStrategy,
    KrumStrategy,
    MedianStrategy,
    NormBoundedStrategy,
    ScaffoldStrategy,
    TrimmedMeanStrategy,
)
from fl_core.errors import ConfigError
from fl_core.robust_aggregation import coordinate_median, trimmed_mean_rule
from fl_server.aggregator import FedAvgAggregator, ServerAggregator
from fl_server.dp_fedavg import build_dp_fedavg
from fl_server.strategies.norm_bounded import NormBoundedAggregator
from fl_server.strategies.robust import CoordinateWiseAggregator, KrumAggregator
from fl_server.strategies.scaffold import ScaffoldAggregator
from fl_server.strategies.server_opt import ServerOptimizerAggregator

AggregatorBuilder = Callable[[FederationConfig], ServerAggregator]
_Strategy = TypeVar("_Strategy")


def _strategy(config: FederationConfig, kind: type[_Strategy]) -> _Strategy:
    """The config's strategy settings as ``kind``; a mismatched table entry fails loudly."""
    strategy = config.strategy
    if not isinstance(strategy, kind):
        raise ConfigError(f"strategy {strategy.name!r} has no {kind.__name__} settings")
    return strategy


def _fedavg(config: FederationConfig) -> ServerAggregator:
    # FedProx too: Li et al. 2020 change only the hospitals' local loss
    # (``fl_client.local_objective``); the server's aggregate is the example-weighted mean.
    return FedAvgAggregator()


def _fedavgm(config: FederationConfig) -> ServerAggregator:
    strategy = _strategy(config, FedAvgMStrategy)
    return ServerOptimizerAggregator(
        "fedavgm", server_learning_rate=strategy.server_learning_rate, beta1=strategy.momentum
    )


def _fedopt(config: FederationConfig) -> ServerAggregator:
    strategy = _strategy(config, FedOptStrategy)
    return ServerOptimizerAggregator(
        strategy.name,
        server_learning_rate=strategy.server_learning_rate,
        beta1=strategy.beta1,
        beta2=strategy.beta2,
        tau=strategy.tau,
        bias_correction=strategy.bias_correction,
    )


def _scaffold(config: FederationConfig) -> ServerAggregator:
    return ScaffoldAggregator(_strategy(config, ScaffoldStrategy).server_learning_rate)


def _median(config: FederationConfig) -> ServerAggregator:
    strategy = _strategy(config, MedianStrategy)
    return CoordinateWiseAggregator(coordinate_median, strategy.chunk_elements)


def _trimmed_mean(config: FederationConfig) -> ServerAggregator:
    strategy = _strategy(config, TrimmedMeanStrategy)
    rule = trimmed_mean_rule(strategy.trim_fraction)
    return CoordinateWiseAggregator(rule, strategy.chunk_elements)


def _krum(config: FederationConfig) -> ServerAggregator:
    strategy = _strategy(config, KrumStrategy)
    needed = 2 * strategy.byzantine + 3
    if config.round.min_sites < needed:
        raise ConfigError(
            f"strategy {strategy.name} with byzantine {strategy.byzantine} needs "
            f"round.min_sites >= {needed} (n > 2f + 2); raise round.min_sites or lower "
            "strategy.byzantine"
        )
    return KrumAggregator(
        strategy.byzantine,
        strategy.chunk_elements,
        multi=strategy.name == "multikrum",
        selected=strategy.selected,
    )


def _norm_bounded(config: FederationConfig) -> ServerAggregator:
    return NormBoundedAggregator(_strategy(config, NormBoundedStrategy).clip_norm)


STRATEGIES: Mapping[str, AggregatorBuilder] = MappingProxyType(
    {
        "fedavg": _fedavg,
        "fedprox": _fedavg,
        "fedavgm": _fedavgm,
        "fedadam": _fedopt,
        "fedyogi": _fedopt,
        "fedadagrad": _fedopt,
        "scaffold": _scaffold,
        "median": _median,
        "trimmed_mean": _trimmed_mean,
        "krum": _krum,
        "multikrum": _krum,
        "norm_bounded": _norm_bounded,
    }
)
"""``strategy.name`` -> the builder of its aggregator (read-only)."""


def build_aggregator(config: FederationConfig) -> ServerAggregator:
    """The aggregator the config names; ``privacy.dp_fedavg`` replaces FedAvg's mean."""
    if config.privacy.dp_fedavg is not None:  # fedavg, fedprox (checked at config load)
        return build_dp_fedavg(config)
    name = config.strategy.name
    builder = STRATEGIES.get(name)
    if builder is None:
        raise ConfigError(
            f"strategy.name {name!r} has no aggregator in this build; "
            f"use one of {sorted(STRATEGIES)}"
        )
    return builder(config)
