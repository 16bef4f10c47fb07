"""Ctrl-C during ``fedsilo simulate``: one line, metrics up to the last closed round, a resume.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group: the aggregator, the
fork server and every hospital worker. The test does the same to a real ``fedsilo simulate``
started in its own session.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from fedsilo.engine.run_folder import read_outcome
from fedsilo.testing.cli import FEDSILO_MODULE, run_fedsilo

ROUNDS = 40
INTERRUPT_AFTER = 3


def _wait_for(path: Path, process: subprocess.Popen[str], limit_s: float = 300.0) -> None:
    """Until ``path`` exists; fails if the process ends first or it never appears."""
    deadline = time.monotonic() + limit_s
    while not path.exists():
        assert process.poll() is None, "simulate ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _foreground_job() -> None:
    """SIGINT as a terminal's foreground job has it, however the test itself was started (a
    background job of a script inherits SIGINT ignored, and so would the command)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _background_job() -> None:
    """SIGINT as a script's background job has it: ignored, as the shell sets it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_simulate(
    arguments: list[str], cwd: Path, job: Callable[[], None], stderr: IO[str] | int
) -> subprocess.Popen[str]:
    """``fedsilo simulate`` in its own session (its own process group, as a terminal's job),
    with SIGINT set up by ``job`` before it starts."""
    return subprocess.Popen(
        [sys.executable, "-m", FEDSILO_MODULE, *arguments],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
        preexec_fn=job,
        env={**os.environ, "COLUMNS": "400"},
    )


@pytest.mark.slow
def test_ctrl_c_stops_with_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    run = tmp_path / "r"
    arguments = ["simulate", "--hospitals", "3", "--rounds", str(ROUNDS), "--workers", "2",
                 "--out", str(tmp_path), "--run-id", "r"]  # fmt: skip
    with (tmp_path / "stderr.txt").open("w") as stderr:
        process = _start_simulate(arguments, tmp_path, _foreground_job, stderr)
        closed = f"{INTERRUPT_AFTER:06d}"
        _wait_for(run / "exchange" / "federations" / "demo" / "rounds" / closed / "result.json",
                  process)  # fmt: skip
        os.killpg(process.pid, signal.SIGINT)
        stdout, _ = process.communicate(timeout=120)
    errors = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 130, errors
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors, errors
    [line] = [line for line in errors.splitlines() if line.startswith("interrupted")]
    assert stdout == ""
    last = int(line.split()[3])
    assert INTERRUPT_AFTER <= last < ROUNDS
    rows = [json.loads(row) for row in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == list(range(1, last + 1))
    assert all(row["auroc"] is not None for row in rows[:-1])  # evaluated by the next round
    assert f"{run / 'metrics.jsonl'}: {last} rounds" in line
    outcome = read_outcome(run)
    assert outcome is not None and outcome.outcome == "interrupted"
    resume = shlex.split(line.split("resume with: ", 1)[1])
    assert resume[0] == "fedsilo" and resume[-2:] == ["--run-id", "r"]
    done = run_fedsilo(*resume[1:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(row) for row in (run / "metrics.jsonl").read_text().splitlines()]
    final = len(rows)  # ROUNDS, or where early stopping ended it, as uninterrupted
    assert [row["round"] for row in rows] == list(range(1, final + 1)) and last < final <= ROUNDS
    rounds = run / "exchange" / "federations" / "demo" / "rounds"
    closing = json.loads((rounds / f"{final:06d}" / "result.json").read_text())
    assert final == ROUNDS or closing["stopped_early"]
    assert all(row["auroc"] is not None for row in rows)
    assert read_outcome(run) is None and (run / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI is not installed")
def test_ctrl_c_under_mpi_stops_with_one_line(tmp_path: Path) -> None:
    """The launcher and mpirun get the SIGINT; mpirun stops the ranks, the launcher says."""
    run = tmp_path / "m"
    arguments = ["simulate", "--engine", "mpi", "--hospitals", "3", "--rounds", "200",
                 "--workers", "2", "--out", str(tmp_path), "--run-id", "m"]  # fmt: skip
    process = _start_simulate(arguments, tmp_path, _foreground_job, subprocess.PIPE)
    closed = f"{INTERRUPT_AFTER:06d}"
    _wait_for(run / "exchange" / "federations" / "demo" / "rounds" / closed / "result.json",
              process)  # fmt: skip
    os.killpg(process.pid, signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130, errors
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors, errors
    [line] = [line for line in errors.splitlines() if line.startswith("interrupted")]
    last = int(line.split()[3])
    rows = [json.loads(row) for row in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == list(range(1, last + 1))
    assert line.endswith("--run-id m") and "--engine mpi" in line
    outcome = read_outcome(run)
    assert outcome is not None and outcome.outcome == "interrupted"


@pytest.mark.slow
def test_a_background_simulate_goes_on_through_ctrl_c_with_all_its_hospitals(
    tmp_path: Path,
) -> None:
    """A script's background job ignores SIGINT: so do its hospital workers, or the
    federation would lose them all and fail."""
    run = tmp_path / "b"
    rounds = 6
    arguments = ["simulate", "--hospitals", "3", "--rounds", str(rounds), "--workers", "2",
                 "--out", str(tmp_path), "--run-id", "b"]  # fmt: skip
    process = _start_simulate(arguments, tmp_path, _background_job, subprocess.PIPE)
    _wait_for(run / "exchange" / "federations" / "demo" / "rounds" / "000002" / "result.json",
              process)  # fmt: skip
    os.killpg(process.pid, signal.SIGINT)
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors
    assert "interrupted" not in errors and "exited" not in errors, errors
    rows = [json.loads(row) for row in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and [row["round"] for row in rows] == list(range(1, len(rows) + 1))
    assert all(row["sites_accepted"] == 3 for row in rows), rows
