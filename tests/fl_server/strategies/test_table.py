"""The static strategy table names exactly the strategies the config accepts."""

from __future__ import annotations

import typing

import pytest

from fl_core.config import FederationConfig, StrategyConfig, load_config
from fl_core.errors import ConfigError
from fl_server.aggregator import ServerAggregator
from fl_server.strategies import STRATEGIES, build_aggregator


def config_strategy_names() -> set[str]:
    """Every ``Literal`` choice of ``strategy.name`` in the config's discriminated union."""
    union, _field = typing.get_args(StrategyConfig)
    names: set[str] = set()
    for model in typing.get_args(union):
        names.update(typing.get_args(model.model_fields["name"].annotation))
    return names


def test_table_keys_equal_the_config_choices():
    assert set(STRATEGIES) == config_strategy_names()


def test_table_is_read_only():
    with pytest.raises(TypeError):
        STRATEGIES["mine"] = STRATEGIES["fedavg"]  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(config_strategy_names()))
def test_every_choice_builds_an_aggregator(name: str):
    overrides = {"strategy.name": name, "round.min_sites": 5}
    config = load_config(None, overrides)
    assert isinstance(build_aggregator(config), ServerAggregator)


def test_a_builder_handed_another_strategy_fails_loudly():
    config: FederationConfig = load_config(None, {"strategy.name": "median"})
    with pytest.raises(ConfigError, match="KrumStrategy"):
        STRATEGIES["krum"](config)
