"""Fixtures shared by several test packages."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedsilo.engine.federation import SimulationEvents
from fedsilo.engine.process_engine import simulate
from fedsilo.ops.tensorboard_sink import TensorBoardEvents
from fedsilo.testing.moto_s3 import threaded_moto_server
from fl_core.config import load_config

TRAIN_ROUNDS = 2


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto_server on 127.0.0.1 on a free port, one request at a time (conditional writes
    are atomic, as on S3); yields its endpoint URL."""
    with threaded_moto_server(atomic=True) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny federation, trained once per session, that the operator and ledger tests read
    and tamper with: 4 hospitals, 2 training rounds and a final evaluation round."""
    config = load_config(
        overrides={
            "rounds": TRAIN_ROUNDS,
            "data.synthetic.hospitals": 4,
            "data.synthetic.mean_stays": 60,
            "simulation.workers": 2,
        }
    )
    out = tmp_path_factory.mktemp("ops-runs")
    events = TensorBoardEvents(out / "tensorboard", SimulationEvents(config.rounds))
    result = simulate(config, out, events=events, run_id="r1")
    return result.run_dir


@pytest.fixture
def exchange_dir(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the run's exchange folder, free to tamper with."""
    target = tmp_path / "exchange"
    shutil.copytree(finished_run / "exchange", target)
    return target
