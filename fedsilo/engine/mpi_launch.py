"""Starting ``fedsilo simulate --engine mpi``: under mpirun already, or re-launched under it.

A user types one command; outside ``mpirun`` it re-launches itself as
``mpirun --oversubscribe -n K python -m fedsilo.cli simulate ...`` with K = hosting ranks + 1
(``simulation.workers``, default one per core, plus the aggregator). Typed by hand,
``mpirun -n K [--hostfile FILE] fedsilo simulate --engine mpi ...`` just runs, with any of
mpirun's own flags. Free of torch and of mpi4py: importing mpi4py initialises MPI, which only
the ranks themselves should do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import structlog

from fedsilo.engine.mpi_setup import RANK_ENVIRONMENT, inside_mpirun, require_mpi
from fedsilo.engine.run_folder import start_run
from fl_core.config import FederationConfig
from fl_core.errors import FedsiloError

log = structlog.get_logger("fedsilo.mpi")

RELAUNCHED = "FEDSILO_MPI_RELAUNCHED"
_ROOT_OVERRIDES = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def default_ranks(config: FederationConfig) -> int:
    """Hosting ranks (``simulation.workers``, default one per core) plus the aggregator.

    Not capped by the number of hospitals (counting them would load the data source here);
    a rank left without a hospital reports at once and waits for the end.
    """
    return (config.simulation.workers or os.cpu_count() or 1) + 1


def rank_environment() -> dict[str, str]:
    """This process's environment plus what Open MPI needs to start ranks as root."""
    environment = dict(os.environ)
    if os.geteuid() == 0:
        environment.update(_ROOT_OVERRIDES)
    return environment


def relaunch_command(
    mpirun: str,
    ranks: int,
    config_file: Path,
    out_dir: Path,
    run_id: str,
    options: dict[str, str | None],
) -> list[str]:
    """``mpirun ... python -m fedsilo.cli simulate`` with the settings already resolved.

    ``--quiet`` keeps Open MPI's multi-line abort banner out of the way: the failing rank has
    printed its one line already.
    """
    command = [mpirun, "--quiet", "--oversubscribe", "-n", str(ranks)]
    command += [sys.executable, "-m", "fedsilo.cli", "simulate", "--engine", "mpi"]
    command += ["--config", str(config_file), "--out", str(out_dir), "--run-id", run_id]
    for flag, value in options.items():
        if value is not None:
            command += [flag, value]
    return command


def relaunch(
    config: FederationConfig,
    out_dir: Path,
    *,
    run_id: str | None,
    options: dict[str, str | None],
) -> int:
    """Run this simulation under ``mpirun -n K``; returns mpirun's exit status.

    The resolved settings (config file plus command-line overrides) are written to the run
    folder's config.json and handed to the ranks, so every rank sees exactly what the user
    asked for. ``options`` are further ``simulate`` flags (``--app``, ``--log-level`` ...).
    """
    mpirun = require_mpi()
    if os.environ.get(RELAUNCHED):
        raise FedsiloError(
            "fedsilo was re-launched under mpirun but sees no MPI environment "
            f"({', '.join(RANK_ENVIRONMENT)} unset); start it with mpirun -n K yourself"
        )
    ranks = default_ranks(config)
    run_dir, _ = start_run(config, out_dir, run_id)
    command = relaunch_command(
        mpirun, ranks, run_dir / "config.json", out_dir, run_dir.name, options
    )
    environment = rank_environment()
    environment[RELAUNCHED] = "1"
    log.info("mpi_relaunch", ranks=ranks, command=command)
    return subprocess.call(command, env=environment)


def run_unless_aggregator(
    config: FederationConfig,
    out_dir: Path,
    *,
    run_id: str | None,
    options: dict[str, str | None],
) -> bool:
    """The CLI's switch: False on rank 0 (the caller runs the aggregator), else True when done.

    Outside mpirun this re-launches the command under mpirun and exits with its status;
    on a hospital rank it serves until the run ends.
    """
    if not inside_mpirun():
        status = relaunch(config, out_dir, run_id=run_id, options=options)
        if status != 0:
            raise SystemExit(status)
        return True
    from fedsilo.engine.gc_policy import start_up

    with start_up():  # torch and the engine; the launcher outside mpirun never imports them
        from fedsilo.engine import mpi_engine

    if mpi_engine.is_aggregator_rank(mpi_engine.world()):
        return False
    mpi_engine.serve_rank()
    return True
