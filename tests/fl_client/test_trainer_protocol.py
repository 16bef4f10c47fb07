"""Which trainers train under DP-SGD is decided by ``PrivateTrainer``, not by probing names."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from fl_client.hospital import Hospital, attach_privacy
from fl_client.privacy_budget import private_training
from fl_client.private import HospitalPrivacy
from fl_client.tabular import TabularTrainer
from fl_client.trainer import ClientTrainer, TrainResult
from fl_client.trainer_protocol import PrivateTrainer
from fl_core.data.base import SiteData
from fl_core.errors import ConfigError
from tests.fl_client._private_hospitals import dp_config, make_hospital

DP_SGD = {"privacy.dp_sgd.target_epsilon": 4.0, "privacy.dp_sgd.delta": 1e-4}


def custom_trainer_example() -> type[ClientTrainer]:
    """The documented extension point's trainer, loaded from examples/custom_trainer.py."""
    path = Path(__file__).resolve().parents[2] / "examples" / "custom_trainer.py"
    spec = importlib.util.spec_from_file_location("custom_trainer_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trainer: type[ClientTrainer] = module.SgdTrainer
    return trainer


class PlainTrainer(ClientTrainer):
    """A trainer that never trains through fl_client.private."""

    def train(self, data: SiteData, round_index: int, seed: int) -> TrainResult:
        return TrainResult(num_examples=data.train.num_examples, train_loss=0.0)


class OwnPrivateTrainer(PlainTrainer):
    """Not a TabularTrainer, yet it offers what DP-SGD needs."""

    privacy: HospitalPrivacy | None = None

    def local_epochs(self, num_examples: int) -> int:
        return 1


def test_the_default_trainer_is_private_and_a_plain_one_is_not() -> None:
    model = nn.Linear(3, 1)
    assert isinstance(TabularTrainer(model, dp_config().training), PrivateTrainer)
    assert isinstance(OwnPrivateTrainer(model), PrivateTrainer)
    assert not isinstance(PlainTrainer(model), PrivateTrainer)
    example = custom_trainer_example()(model, epochs=1, device=torch.device("cpu"))
    assert not isinstance(example, PrivateTrainer)


def test_dp_sgd_refuses_a_trainer_without_private_training_at_client_start(source) -> None:
    config = dp_config(**DP_SGD)
    template = make_hospital(source, config)
    hospital = Hospital(data=template.data, trainer=PlainTrainer(template.trainer.model))
    with pytest.raises(ConfigError, match=r"PlainTrainer does not: drop privacy\.dp_sgd"):
        attach_privacy(hospital, config)
    assert hospital.privacy is None


def test_a_trainer_that_offers_private_training_is_bound_for_its_round_only(source) -> None:
    config = dp_config(**DP_SGD)
    template = make_hospital(source, config)
    trainer = OwnPrivateTrainer(template.trainer.model)
    hospital = Hospital(data=template.data, trainer=trainer)
    attach_privacy(hospital, config)
    assert hospital.privacy is not None
    with private_training(trainer, hospital.privacy, 1):
        assert trainer.privacy is hospital.privacy
    assert trainer.privacy is None


def test_without_dp_sgd_any_trainer_serves(source) -> None:
    config = dp_config()
    template = make_hospital(source, config)
    hospital = Hospital(data=template.data, trainer=PlainTrainer(template.trainer.model))
    attach_privacy(hospital, config)
    assert hospital.privacy is None


def module_imports(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules of the same package it imports (any import,
    those under ``TYPE_CHECKING`` included: a cycle there is a cycle for a reader too)."""
    root = package.parent
    names = {
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
        for p in package.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = (found & names.keys()) - {name}
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from ``start`` back to itself, if there is one."""
    paths = [[start]]
    seen: set[str] = set()
    while paths:
        path = paths.pop()
        for following in sorted(graph[path[-1]]):
            if following == start:
                return [*path, start]
            if following not in seen:
                seen.add(following)
                paths.append([*path, following])
    return None


def test_no_module_of_fl_client_imports_itself_through_others() -> None:
    graph = module_imports(Path(__file__).resolve().parents[2] / "fl_client")
    assert "fl_client.hospital" in graph and "fl_client.privacy_budget" in graph
    cycles = {name: cycle for name in graph if (cycle := cycle_through(graph, name))}
    assert cycles == {}


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_through(graph, "a") == ["a", "b", "c", "a"]
    assert cycle_through(graph, "d") is None
