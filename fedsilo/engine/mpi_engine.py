"""``fedsilo simulate --engine mpi``: the same federation as the process engine, on MPI ranks.

Rank 0 runs the aggregator's ``RoundLoop``; ranks 1..K-1 each host a slice of the hospitals
with ``serve_sites`` (several hospitals per rank, so 208 hospitals on 2 cores are two Python
processes, not 208). The rounds go through the shared exchange (a ``file://`` folder every rank
sees, or ``s3://`` with an endpoint) exactly as in the process engine and in a deployment; MPI
carries only the coordination: which rank hosts which sites, the run's settings, a report of
what each rank served, and the end of the run.

Why no blocking collectives: Open MPI busy-polls inside a blocking receive, and on an
oversubscribed machine (2 cores, 3 ranks) a rank spinning in ``gather`` steals the CPU the
hospitals train on. Every wait here is ``Iprobe`` plus a sleep.

Failures: a rank that raises prints one line and calls ``MPI_Abort``, which makes ``mpirun``
stop every rank and exit with that rank's code. A plain non-zero exit would not do: mpi4py
finalises MPI at exit, and Open MPI's finalise waits for the other ranks, which may be waiting
for a round that never comes.

``mpirun -n 1`` (no rank left for hospitals) is refused with exit 2; ``fedsilo.engine.mpi_launch``
starts mpirun when the user did not.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Unpack

import structlog
import torch

from fedsilo.engine.app import FederatedApp, load_app
from fedsilo.engine.federation import (
    RunOptions,
    SimulationEvents,
    SimulationResult,
    load_hospitals,
    open_exchange,
    prepare_federation,
)
from fedsilo.engine.gc_policy import freeze_start_up
from fedsilo.engine.mpi_setup import require_mpi
from fl_client.hospital import serve_sites
from fl_core.config import FederationConfig
from fl_core.errors import ConfigError, FedsiloError

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm

log = structlog.get_logger("fedsilo.mpi")

_POLL_S = 0.05
_RELEASE_POLL_S = 0.2

_TAG_ASSIGN = 11
_TAG_REPORT = 12
_TAG_RELEASE = 13
AGGREGATOR_RANK = 0
MPI_REPORT_FILE = "mpi.json"


@dataclass(frozen=True)
class Assignment:
    """What rank 0 tells a hospital rank: the run's settings and the sites it hosts."""

    config_json: str
    exchange_uri: str
    run_id: str
    site_ids: tuple[str, ...]
    app_ref: str | None
    app: FederatedApp | None
    secagg_key_dir: str | None
    """Where each hospital's secure-aggregation key lies (a folder every rank can read)."""


@dataclass(frozen=True)
class RankReport:
    """What a hospital rank tells rank 0 once the final round is answered."""

    rank: int
    host: str
    site_ids: tuple[str, ...]
    rounds_served: int


# ---- inside mpirun ---------------------------------------------------------------------------


def world() -> Intracomm:
    """MPI's world communicator (importing mpi4py initialises MPI, so only inside mpirun)."""
    require_mpi()
    from mpi4py import MPI

    return MPI.COMM_WORLD


def is_aggregator_rank(comm: Intracomm) -> bool:
    return comm.Get_rank() == AGGREGATOR_RANK


def abort(comm: Intracomm, err: BaseException, role: str) -> NoReturn:
    """One line (a traceback only for a bug), then stop every rank with the error's code."""
    code = err.exit_code if isinstance(err, FedsiloError) else 1
    if not isinstance(err, FedsiloError):
        traceback.print_exc()
    message = str(err).strip() or type(err).__name__
    print(f"error: rank {comm.Get_rank()} ({role}): {message}", file=sys.stderr, flush=True)
    comm.Abort(code)
    raise SystemExit(code)  # pragma: no cover - Abort does not return


def _receive(comm: Intracomm, source: int, tag: int, poll_s: float = _POLL_S) -> Any:
    """A receive that sleeps between probes instead of spinning a core."""
    from mpi4py import MPI

    status = MPI.Status()
    while not comm.Iprobe(source=source, tag=tag, status=status):
        time.sleep(poll_s)
    return comm.recv(source=status.Get_source(), tag=tag)


def simulate(
    config: FederationConfig, out_dir: Path, **options: Unpack[RunOptions]
) -> SimulationResult:
    """Rank 0's side of an MPI federation: assign sites, run the rounds, write the run folder.

    Driven as ``fedsilo.engine.process_engine.simulate`` is (``log_format`` and ``log_level``
    are each rank's own command-line flags here).
    """
    comm = world()
    try:
        return _aggregate(comm, config, out_dir, options)
    except Exception as err:  # any failure must stop the hospital ranks, not leave them waiting
        abort(comm, err, "aggregator")


def _aggregate(
    comm: Intracomm, config: FederationConfig, out_dir: Path, options: RunOptions
) -> SimulationResult:
    size = comm.Get_size()
    if size < 2:
        raise ConfigError(
            "--engine mpi needs at least 2 ranks (rank 0 aggregates, the others host the "
            "hospitals): use mpirun -n 2 or more, or run fedsilo without mpirun"
        )
    federation = prepare_federation(config, out_dir, options)
    plan = federation.placement(size - 1)
    app_ref = options.get("app_ref")
    key_dir = federation.secagg_key_dir
    for rank, site_ids in enumerate(plan, start=1):
        assignment = Assignment(
            config_json=config.model_dump_json(),
            exchange_uri=federation.exchange_uri,
            run_id=federation.run_dir.name,
            site_ids=site_ids,
            app_ref=app_ref,
            app=None if app_ref else federation.app,
            secagg_key_dir=None if key_dir is None else str(key_dir),
        )
        comm.send(assignment, dest=rank, tag=_TAG_ASSIGN)
    log.info("mpi_sites_assigned", ranks=size, sites=len(federation.sites))
    federation.run_rounds(options.get("events") or SimulationEvents(config.rounds))
    reports = [_receive(comm, rank, _TAG_REPORT) for rank in range(1, size)]
    result = federation.finish()
    _write_rank_report(federation.run_dir, size, reports)
    for rank in range(1, size):
        comm.send(None, dest=rank, tag=_TAG_RELEASE)
    return result


def _write_rank_report(run_dir: Path, size: int, reports: list[RankReport]) -> None:
    """``mpi.json``: which rank on which host served which sites, for the record."""
    document = {
        "ranks": size,
        "hospital_ranks": [
            {
                "rank": report.rank,
                "host": report.host,
                "sites": list(report.site_ids),
                "rounds_served": report.rounds_served,
            }
            for report in reports
        ],
    }
    (run_dir / MPI_REPORT_FILE).write_text(json.dumps(document, indent=2) + "\n")


def serve_rank() -> None:
    """A hospital rank: receive its sites, answer every round, report, wait to be released."""
    comm = world()
    try:
        _serve(comm)
    except Exception as err:
        abort(comm, err, "hospitals")


def _serve(comm: Intracomm) -> None:
    assignment: Assignment = _receive(comm, AGGREGATOR_RANK, _TAG_ASSIGN)
    config = FederationConfig.model_validate_json(assignment.config_json)
    structlog.contextvars.bind_contextvars(run_id=assignment.run_id, rank=comm.Get_rank())
    torch.set_num_threads(1)  # ranks share the cores; one intra-op thread each
    served = 0
    if assignment.site_ids:
        app = assignment.app if assignment.app is not None else load_app(assignment.app_ref)
        key_dir = None if assignment.secagg_key_dir is None else Path(assignment.secagg_key_dir)
        hospitals = load_hospitals(app, config, assignment.site_ids, key_dir)
        exchange = open_exchange(assignment.exchange_uri, config)
        freeze_start_up()
        served = serve_sites(exchange, hospitals, config, config.simulation.client_timeout_s)
    report = RankReport(
        rank=comm.Get_rank(),
        host=os.uname().nodename,
        site_ids=assignment.site_ids,
        rounds_served=served,
    )
    comm.send(report, dest=AGGREGATOR_RANK, tag=_TAG_REPORT)
    _receive(comm, AGGREGATOR_RANK, _TAG_RELEASE, poll_s=_RELEASE_POLL_S)
