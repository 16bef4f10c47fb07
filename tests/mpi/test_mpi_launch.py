"""The MPI engine's launch logic, without starting MPI (fast)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedsilo.engine import mpi_launch
from fl_core.config import load_config

ROOT = Path(__file__).resolve().parents[2]
FEDSILO = ROOT / ".venv" / "bin" / "fedsilo"


def test_default_ranks_one_per_worker_plus_the_aggregator() -> None:
    config = load_config(overrides={"simulation.workers": 4})
    assert mpi_launch.default_ranks(config) == 5


def test_relaunch_command_passes_resolved_settings(tmp_path: Path) -> None:
    command = mpi_launch.relaunch_command(
        "/usr/bin/mpirun",
        3,
        tmp_path / "config.json",
        tmp_path,
        "run-1",
        {"--app": None, "--log-level": "INFO"},
    )
    assert command[:5] == ["/usr/bin/mpirun", "--quiet", "--oversubscribe", "-n", "3"]
    assert command[5:8] == [sys.executable, "-m", "fedsilo.cli"]
    assert command[-2:] == ["--log-level", "INFO"]
    assert "--app" not in command
    assert command[command.index("--config") + 1] == str(tmp_path / "config.json")
    assert command[command.index("--engine") + 1] == "mpi"


def test_inside_mpirun_reads_the_process_manager_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not mpi_launch.inside_mpirun()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    assert mpi_launch.inside_mpirun()


def test_missing_mpirun_exits_2_with_how_to_install(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(FEDSILO), "simulate", "--engine", "mpi", "--hospitals", "3", "--rounds", "1"],
        cwd=tmp_path,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "mpirun not found" in lines[0]
    assert "make install" in lines[0]


def test_the_launcher_outside_mpirun_never_imports_torch(tmp_path: Path) -> None:
    """It only re-launches under mpirun: torch there was a CPU-second for nothing."""
    code = """
import sys
from fedsilo import cli
from fedsilo.engine import mpi_launch
launched = []
mpi_launch.relaunch = lambda *args, **kwargs: launched.append(args) or 0
sys.argv = ["fedsilo", "simulate", "--engine", "mpi", "--hospitals", "3", "--rounds", "1",
            "--out", sys.argv[1]]
try:
    cli.app(standalone_mode=False)
finally:
    assert launched, "did not re-launch"
    assert "torch" not in sys.modules, "the launcher imported torch"
print("ok")
"""
    env = {
        key: value
        for key, value in mpi_launch.rank_environment().items()
        if key not in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")
    }
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
