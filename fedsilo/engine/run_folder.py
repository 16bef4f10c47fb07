"""The run folder every engine writes: ``runs/<run-id>/`` with the resolved config.json.

Kept apart from the engines (and free of torch) so that ``fedsilo simulate --engine mpi``
can prepare the folder and hand its config.json to the ranks before importing torch.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from fl_core.config import FederationConfig
from fl_core.errors import ConfigError

OUTCOME_FILE = "outcome.json"


class RunOutcome(BaseModel):
    """Why a run folder holds no finished run: it failed, or it was interrupted (resumable).

    Written beside config.json so that commands choosing "the newest run" never pick a run
    that failed, and a person opening the folder reads why it stopped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: Literal["failed", "interrupted"]
    detail: str
    at: str  # ISO time, UTC


def new_run_id(config: FederationConfig) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{config.federation_id}-s{config.seed}-{os.getpid()}"


def start_run(config: FederationConfig, out_dir: Path, run_id: str | None) -> tuple[Path, str]:
    """Create the run folder with its config.json; returns it and the exchange URI.

    A run started again under its run id (a resume) is no longer failed or interrupted.
    """
    run_dir = out_dir / (run_id or new_run_id(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / OUTCOME_FILE).unlink(missing_ok=True)
    structlog.contextvars.bind_contextvars(run_id=run_dir.name)
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    return run_dir, run_exchange_uri(config, run_dir)


def run_exchange_uri(config: FederationConfig, run_dir: Path) -> str:
    """The config's exchange, or the run's own folder ``exchange/`` inside the run folder.

    The run's own exchange lives and dies with the run: no fsync per write (see fs_store).
    """
    return config.exchange.uri or f"{(run_dir / 'exchange').resolve().as_uri()}?durable=false"


def record_outcome(run_dir: Path, outcome: Literal["failed", "interrupted"], detail: str) -> None:
    """Mark a run folder as failed or interrupted (nothing to do if it was never created)."""
    if not is_run_folder(run_dir):
        return
    record = RunOutcome(outcome=outcome, detail=detail, at=datetime.now(UTC).isoformat())
    (run_dir / OUTCOME_FILE).write_text(record.model_dump_json(indent=2))


def read_outcome(run_dir: Path) -> RunOutcome | None:
    """The run's recorded failure or interruption; None for a run running or finished."""
    path = run_dir / OUTCOME_FILE
    try:
        return RunOutcome.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError):  # unreadable: the run did not finish cleanly either
        return RunOutcome(outcome="failed", detail=f"{path} is unreadable", at="")


def is_run_folder(path: Path) -> bool:
    """A folder ``start_run`` made: it holds the run's config.json."""
    return (path / "config.json").is_file()


def resolve_run_folder(path: Path, needs: str | None = None) -> tuple[Path, str | None]:
    """The run folder ``path`` names: itself, or the newest run inside the ``--out`` folder.

    ``fedsilo simulate --out D`` writes ``D/<run-id>/``; operators hand the commands ``D``.
    A run marked failed is never chosen as the newest, and neither is an interrupted one when
    ``needs`` names a file the run must hold (``metrics.jsonl``: a run that finished). Returns
    the run folder and, when it was chosen among several or was itself marked, a line saying
    which.
    """
    if is_run_folder(path):
        outcome = read_outcome(path)
        if outcome is None:
            return path, None
        return path, f"note: this run {outcome.outcome}: {outcome.detail}"
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder; pass a run folder or simulate's --out folder")
    runs = [child for child in path.iterdir() if child.is_dir() and is_run_folder(child)]
    outcomes = {run: read_outcome(run) for run in runs}
    usable = [
        run
        for run in runs
        if (outcome := outcomes[run]) is None
        or (outcome.outcome == "interrupted" and needs is None)
    ]
    usable = [run for run in usable if needs is None or (run / needs).is_file()]
    if not usable:
        marked = sum(outcome is not None for outcome in outcomes.values())
        if runs and marked:
            raise ConfigError(
                f"{path} holds {len(runs)} run folder(s), {marked} of them failed or "
                f"interrupted and none finished; pass one of them to see it, or run "
                "`fedsilo simulate` again"
            )
        holding = f" with a {needs}" if needs and runs else ""
        raise ConfigError(
            f"{path} holds no run folder{holding} (no config.json in it or its subfolders); "
            "pass the folder given to `fedsilo simulate --out` or one of its run folders"
        )
    newest = max(usable, key=lambda run: ((run / "config.json").stat().st_mtime, run.name))
    kind = "finished run" if needs == "metrics.jsonl" else "run"
    note = f"run folder: {newest} (the newest {kind} of {len(runs)} in {path})"
    if outcomes[newest] is not None:
        note += "; it was interrupted"
    return newest, note
