"""The runner: a user's model, trainer and aggregator, handed to fedsilo as in FedML.

``FederatedApp`` plays the role of FedML's ``FedMLRunner(args, device, dataset, model,
trainer, aggregator)``: three factories that build plain PyTorch objects. Factories (not
instances) because every hospital worker process builds its own; they must be importable
top-level callables so that spawned workers can find them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fl_core.config import FederationConfig
from fl_core.data.base import DataSource
from fl_core.errors import ConfigError
from fl_server.aggregator import ServerAggregator
from fl_server.strategies import build_aggregator

if TYPE_CHECKING:
    # torch loads only where a model or trainer is built: an aggregator whose strategy is
    # numpy over safetensors (FedAvg) starts without it
    import torch
    from torch import nn

    from fl_client.trainer import ClientTrainer

ModelFactory = Callable[[int, FederationConfig], "nn.Module"]
TrainerFactory = Callable[["nn.Module", FederationConfig, "torch.device"], "ClientTrainer"]
AggregatorFactory = Callable[[FederationConfig], ServerAggregator]


def default_model(num_features: int, config: FederationConfig) -> nn.Module:
    from fl_core.models import TabularMLP

    return TabularMLP(
        num_features,
        config.training.hidden_sizes,
        config.training.dropout,
        config.training.linear_skip,
        config.training.logit_offset is not None,
    )


def default_trainer(
    model: nn.Module, config: FederationConfig, device: torch.device
) -> ClientTrainer:
    from fl_client.tabular import TabularTrainer

    return TabularTrainer(model, config.training, device)


def default_aggregator(config: FederationConfig) -> ServerAggregator:
    return build_aggregator(config)


@dataclass(frozen=True)
class FederatedApp:
    """A user's federation: how to build the model, the hospitals' trainer and the aggregator.

    Give it to ``fedsilo simulate --app FILE.py:NAME`` (or to ``simulate(..., app=...)``);
    every field defaults to fedsilo's tabular model, ``TabularTrainer`` and the aggregator
    the config's ``strategy.name`` picks. Each field is a factory, called once per process
    that needs one (each hospital worker builds its own trainer), so it must be a top-level
    callable that a spawned process can import.

    Attributes
    ----------
    model
        ``(num_features, config) -> nn.Module``; the first round's weights come from it at
        the config's seed, standardised by the hospitals' feature moments when the module
        has ``set_standardisation(mean, std)``.
    trainer
        ``(model, config, device) -> ClientTrainer``: what trains and evaluates at a hospital.
    aggregator
        ``config -> ServerAggregator``: how the coordinating centre combines admitted updates.
    """

    model: ModelFactory = default_model
    trainer: TrainerFactory = default_trainer
    aggregator: AggregatorFactory = default_aggregator

    def build_trainer(self, num_features: int, config: FederationConfig) -> ClientTrainer:
        """One hospital process's trainer, on the device the config asks for."""
        from fl_client.trainer import pick_device

        model = self.model(num_features, config)
        return self.trainer(model, config, pick_device(config.training.device))


DEFAULT_APP = FederatedApp()


def load_app(reference: str | None) -> FederatedApp:
    """``path/to/file.py:NAME`` or ``package.module:NAME`` naming a ``FederatedApp``."""
    if reference is None:
        return DEFAULT_APP
    target, _, attribute = reference.partition(":")
    attribute = attribute or "app"
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise ConfigError(f"--app {reference}: file {path} not found")
        name = f"fedsilo_user_app_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"--app {reference}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ConfigError(f"--app {reference}: cannot import {target}: {err}") from err
    app = getattr(module, attribute, None)
    if not isinstance(app, FederatedApp):
        raise ConfigError(
            f"--app {reference}: {attribute} is not a fedsilo.engine.app.FederatedApp"
        )
    return app


def build_source(config: FederationConfig) -> DataSource:
    """The data source a config names (synthetic by default, or prepared folders)."""
    if config.data.source == "prepared":
        assert config.data.path is not None
        try:
            from fl_core.data.prepared import PreparedFolderSource
        except ImportError as err:  # pragma: no cover - arrives with the eICU data layer
            raise ConfigError("prepared data folders are not supported in this build") from err
        return PreparedFolderSource(config.data.path)
    if config.data.source == "twin":
        from fl_core.data.eicu.twin_source import twin_source

        return twin_source(config.data.twin, config.seed)
    from fl_core.data.synthetic import SyntheticSource

    synthetic = config.data.synthetic
    seed = config.seed if synthetic.seed is None else synthetic.seed
    return SyntheticSource(synthetic.hospitals, synthetic.mean_stays, seed)
