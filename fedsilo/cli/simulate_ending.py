"""How a ``fedsilo simulate`` that does not finish ends: Ctrl-C, or ranks that failed.

Ctrl-C stops the run with one line: the round reached, what metrics.jsonl holds, and the
command that resumes it (the same options with ``--run-id``).
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from fedsilo.cli.output import console

if TYPE_CHECKING:
    from fl_core.config import FederationConfig


def resume_command(run_id: str) -> str:
    """This command line with ``--run-id``, which continues the run from its last round."""
    arguments = sys.argv[1:]
    if not any(arg == "--run-id" or arg.startswith("--run-id=") for arg in arguments):
        arguments += ["--run-id", run_id]
    return shlex.join(["fedsilo", *arguments])


def stop_interrupted(federation: FederationConfig, run_dir: Path) -> NoReturn:
    """After Ctrl-C: the one line, then exit 130 (a second Ctrl-C cannot cut it short)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    report_interrupted(federation, run_dir)
    raise typer.Exit(130)


def report_interrupted(federation: FederationConfig, run_dir: Path) -> None:
    """One line: where the run stopped, what metrics.jsonl holds, the command that resumes."""
    from fedsilo.engine.run_folder import is_run_folder
    from fedsilo.engine.stopped_run import close_interrupted_run

    if not is_run_folder(run_dir):
        console.print("interrupted before the run folder was made; nothing to resume")
        return
    stopped = close_interrupted_run(federation, run_dir)
    console.print(
        f"interrupted after round {stopped.last_closed} of {federation.rounds} "
        f"({run_dir / 'metrics.jsonl'}: {stopped.rows} rounds); resume with: "
        f"{resume_command(run_dir.name)}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def plain_output_for_ranks() -> None:
    """No colour or cursor codes from ranks when this command's output is not a terminal.

    mpirun gives each rank a pseudo-terminal whatever its own output is, so a rank cannot
    tell that the output ends in a file; the launcher tells it through the environment the
    ranks inherit (rich reads ``TTY_COMPATIBLE``, it and the log renderer ``NO_COLOR``).
    """
    import os

    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault("TTY_COMPATIBLE", "0")
        os.environ.setdefault("NO_COLOR", "1")


def launch_under_mpirun(
    federation: FederationConfig, out: Path, run_id: str, options: dict[str, str | None]
) -> bool:
    """``run_unless_aggregator``, with the launcher saying how the ranks' run ended.

    Ctrl-C reaches the launcher and mpirun, which stops the ranks; the launcher then writes
    metrics.jsonl from the exchange and prints the one line with the resume command. A run
    whose ranks failed is marked failed in its folder.
    """
    from fedsilo.engine.mpi_launch import run_unless_aggregator
    from fedsilo.engine.mpi_setup import inside_mpirun
    from fedsilo.engine.run_folder import record_outcome

    if inside_mpirun():
        return run_unless_aggregator(federation, out, run_id=run_id, options=options)
    try:
        return run_unless_aggregator(federation, out, run_id=run_id, options=options)
    except KeyboardInterrupt:
        stop_interrupted(federation, out / run_id)
    except SystemExit as failed:
        if failed.code:
            record_outcome(out / run_id, "failed", f"mpirun exited with status {failed.code}")
        raise
