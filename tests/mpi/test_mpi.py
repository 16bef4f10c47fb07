"""``fedsilo simulate --engine mpi`` end to end under Open MPI on this machine.

Three ranks (rank 0 aggregates, two ranks host three hospitals each), once under a
hand-typed ``mpirun --oversubscribe -n 3`` and once through the self-relaunch with a rank
that fails mid-run, which must stop the whole job quickly with one line, not hang.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fedsilo.engine.app import build_source
from fedsilo.engine.mpi_engine import MPI_REPORT_FILE
from fedsilo.engine.mpi_launch import rank_environment
from fedsilo.engine.placement import place_sites
from fl_core.config import load_config

ROOT = Path(__file__).resolve().parents[2]
FEDSILO = str(ROOT / ".venv" / "bin" / "fedsilo")
FAULT_APP = str(Path(__file__).with_name("fault_app.py")) + ":app"
RUN_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("mpirun") is None, reason="Open MPI is not installed; run make install"
    ),
]


def _run(cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    environment = rank_environment()
    environment.pop("FEDSILO_MPI_RELAUNCHED", None)
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def _simulate(
    tmp_path: Path, *args: str, mpirun: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``fedsilo simulate --engine mpi --out tmp_path *args``, under ``mpirun`` when given."""
    mpi = (FEDSILO, "simulate", "--engine", "mpi", "--out", str(tmp_path))
    return _run(tmp_path, *mpirun, *mpi, *args)


@pytest.fixture
def mpirun() -> str:
    found = shutil.which("mpirun")
    assert found is not None
    return found


def test_hand_typed_mpirun_multiplexes_hospitals_and_writes_the_run(
    tmp_path: Path, mpirun: str
) -> None:
    hand_typed = (mpirun, "--oversubscribe", "-n", "3")
    args = ("--hospitals", "6", "--rounds", "2", "--run-id", "mpi")
    done = _simulate(tmp_path, *args, mpirun=hand_typed)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "mpi"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [1, 2]
    for row in rows:
        assert 0.5 < row["auroc"] <= 1.0
        assert row["sites_accepted"] == 6
        assert row["sites_rejected"] == 0
    assert (run_dir / "model.safetensors").stat().st_size > 0
    report = json.loads((run_dir / MPI_REPORT_FILE).read_text())
    assert report["ranks"] == 3
    hosted = {entry["rank"]: tuple(entry["sites"]) for entry in report["hospital_ranks"]}
    plan = _placement(hospitals=6, ranks=2)
    assert hosted == {1: plan[0], 2: plan[1]}
    assert sorted(hosted[1] + hosted[2]) == [f"site-00{i}" for i in range(1, 7)]
    # two training rounds and the final evaluation round, answered by every rank
    assert {entry["rounds_served"] for entry in report["hospital_ranks"]} == {3}


def _placement(hospitals: int, ranks: int) -> list[tuple[str, ...]]:
    """The synthetic hospitals per hospital rank, placed as both engines place them."""
    config = load_config(overrides={"data.synthetic.hospitals": hospitals})
    return place_sites(build_source(config), ranks, config.training)


def test_a_failing_rank_stops_the_run_quickly_with_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    args = ("--hospitals", "4", "--rounds", "3", "--workers", "2", "--app", FAULT_APP)
    done = _simulate(tmp_path, *args, "--run-id", "fault")
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-3000:]
    assert elapsed < 60, f"the failed run took {elapsed:.0f} s to stop"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    rank = 1 + next(i for i, part in enumerate(_placement(4, 2)) if "site-002" in part)
    assert errors == [f"error: rank {rank} (hospitals): injected fault at site-002 in round 2"]
    assert "Traceback" not in done.stderr
    # round 1 closed before the fault; nothing after it was aggregated
    assert not (tmp_path / "fault" / "model.safetensors").exists()


def test_secure_aggregation_runs_on_mpi_ranks(tmp_path: Path) -> None:
    """--secure-aggregation: each rank loads its hospitals' keys; every round is unmasked."""
    args = ("--hospitals", "4", "--rounds", "2", "--workers", "2", "--secure-aggregation")
    done = _simulate(tmp_path, *args, "--run-id", "sa")
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "sa"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["sites_accepted"] for row in rows] == [4, 4]
    rounds = run_dir / "exchange" / "federations" / "demo" / "rounds"
    for round_index in (1, 2):
        assert (rounds / f"{round_index:06d}" / "global.secagg-unmask.json").is_file()
    assert len(list((run_dir / "hospital-keys").iterdir())) == 4


def test_one_rank_is_refused_with_exit_2(tmp_path: Path, mpirun: str) -> None:
    one_rank = (mpirun, "--quiet", "-n", "1")
    done = _simulate(tmp_path, "--hospitals", "2", "--rounds", "1", mpirun=one_rank)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "needs at least 2 ranks" in done.stderr


@pytest.fixture(autouse=True)
def _no_inherited_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests started under mpirun themselves must not look like ranks to the child."""
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"):
        monkeypatch.delitem(os.environ, name, raising=False)
