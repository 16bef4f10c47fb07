"""Impossible privacy settings exit 2 with one line naming the problem (config load and
client start), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def fedsilo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "fedsilo.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def one_line_exit_2(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip().startswith("error")]
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]


@pytest.mark.parametrize(
    ("privacy", "needle"),
    [
        (
            "  dp_fedavg: {noise_multiplier: 0.3, target_epsilon: 1.0}\n",
            "noise_multiplier 0.3 is too low to keep target epsilon 1.0",
        ),
        ("  dp_fedavg: {noise_multiplier: 1.0, delta: 0.1}\n", "delta 0.1 >= 1/n = 1/20 sites"),
        ("  dp_sgd: {target_epsilon: -1}\n", "privacy.dp_sgd.target_epsilon"),
        ("  dp_fedavg: {target_epsilon: 0}\n", "privacy.dp_fedavg.target_epsilon"),
    ],
)
def test_simulate_with_an_impossible_config_exits_2(tmp_path, privacy, needle):
    config = tmp_path / "federation.yaml"
    config.write_text(f"rounds: 10\nprivacy:\n{privacy}")
    one_line_exit_2(fedsilo("simulate", "--config", str(config), cwd=tmp_path), needle)


def test_dp_fedavg_with_a_robust_strategy_names_the_allowed_ones(tmp_path):
    config = tmp_path / "federation.yaml"
    config.write_text("strategy: {name: median}\nprivacy:\n  dp_fedavg: {target_epsilon: 3}\n")
    done = fedsilo("simulate", "--config", str(config), cwd=tmp_path)
    one_line_exit_2(done, "use strategy fedavg or fedprox with dp_fedavg")


def test_client_start_checks_delta_against_its_rows_and_wants_a_state_folder(tmp_path):
    exchange = (tmp_path / "exchange").as_uri()
    base = ["client", "run", "--site-id", "site-001", "--exchange", exchange]
    done = fedsilo(*base, "--dp-target-epsilon", "2", cwd=tmp_path)
    one_line_exit_2(done, "pass --state-dir DIR")
    done = fedsilo(
        *base,
        "--state-dir",
        str(tmp_path / "state"),
        "--dp-target-epsilon",
        "2",
        "--dp-delta",
        "0.5",
        cwd=tmp_path,
    )
    one_line_exit_2(done, "delta 0.5 >= 1/n")
    assert "training rows" in done.stderr
