"""A deployed hospital with DP-SGD or secure aggregation refuses to start on a state folder that
a task restart would wipe; a run outside ECS is not checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fl_client.state_persistence import (
    ECS_TASK_MARKER,
    STATE_PERSISTENT_ENV,
    require_persistent_state,
)
from fl_core.config import FederationConfig
from fl_core.errors import ConfigError

IN_ECS = {ECS_TASK_MARKER: "http://169.254.170.2/v4/0123456789abcdef"}


def config(privacy: dict[str, Any]) -> FederationConfig:
    return FederationConfig.model_validate({"privacy": privacy})


DP_SGD = {"dp_sgd": {"target_epsilon": 2}}
SECAGG = {"secagg": {"enabled": True}}


@pytest.mark.parametrize(
    ("privacy", "named"),
    [
        (DP_SGD, "privacy.dp_sgd need"),
        (SECAGG, "privacy.secagg need"),
        ({**DP_SGD, "secagg": {"enabled": False}}, "privacy.dp_sgd need"),
    ],
)
@pytest.mark.parametrize("persistent", [None, "", "ebs", "EFS"])
def test_an_ecs_task_without_a_persistent_state_folder_is_refused(
    privacy: dict[str, Any], named: str, persistent: str | None
) -> None:
    environ = dict(IN_ECS)
    if persistent is not None:
        environ[STATE_PERSISTENT_ENV] = persistent
    with pytest.raises(ConfigError, match=named) as refused:
        require_persistent_state(config(privacy), environ)
    message = str(refused.value)
    assert "\n" not in message
    assert f"{STATE_PERSISTENT_ENV}=efs" in message


@pytest.mark.parametrize("privacy", [DP_SGD, SECAGG])
def test_an_ecs_task_on_the_efs_state_volume_starts(privacy: dict[str, Any]) -> None:
    require_persistent_state(config(privacy), {**IN_ECS, STATE_PERSISTENT_ENV: "efs"})


@pytest.mark.parametrize("privacy", [DP_SGD, SECAGG])
def test_a_run_outside_ecs_is_not_checked(privacy: dict[str, Any]) -> None:
    require_persistent_state(config(privacy), {STATE_PERSISTENT_ENV: ""})


def test_an_ecs_task_without_dp_sgd_or_secagg_keeps_nothing_that_must_persist() -> None:
    require_persistent_state(config({}), IN_ECS)


def client_run(tmp_path: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``fedsilo client run`` with DP-SGD whose delta its (absent) rows cannot meet.

    The delta check comes after the persistence check, so reaching it proves that the
    persistence check let the client through.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in (ECS_TASK_MARKER, STATE_PERSISTENT_ENV)
    }
    args = ["client", "run", "--site-id", "site-001", "--exchange", (tmp_path / "x").as_uri()]
    args += ["--state-dir", str(tmp_path / "state"), "--dp-target-epsilon", "2"]
    args += ["--dp-delta", "0.5"]
    return subprocess.run(
        [sys.executable, "-m", "fedsilo.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, **environ, "COLUMNS": "400"},
    )


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    return [line for line in done.stderr.splitlines() if line.strip().startswith("error")]


def test_client_run_in_ecs_without_the_state_volume_exits_2_with_one_line(
    tmp_path: Path,
) -> None:
    (line,) = error_lines(client_run(tmp_path, IN_ECS))
    assert "privacy.dp_sgd need a persistent state folder" in line
    assert f"{STATE_PERSISTENT_ENV}=efs" in line


@pytest.mark.parametrize(
    "environ", [{**IN_ECS, STATE_PERSISTENT_ENV: "efs"}, {}], ids=["ecs-with-efs", "local"]
)
def test_client_run_with_the_state_volume_or_locally_passes_the_check(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    (line,) = error_lines(client_run(tmp_path, environ))
    assert "delta 0.5 >= 1/n" in line
