"""The run folder every engine writes: ``runs/<run-id>/`` with the resolved config.json.

Kept apart from the engines (and free of torch) so that ``fedsilo simulate --engine mpi``
can prepare the folder and hand its config.json to the ranks before importing torch.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import structlog

from fl_core.config import FederationConfig
from fl_core.errors import ConfigError


def new_run_id(config: FederationConfig) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{config.federation_id}-s{config.seed}-{os.getpid()}"


def start_run(config: FederationConfig, out_dir: Path, run_id: str | None) -> tuple[Path, str]:
    """Create the run folder with its config.json; returns it and the exchange URI."""
    run_dir = out_dir / (run_id or new_run_id(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    structlog.contextvars.bind_contextvars(run_id=run_dir.name)
    # the run's own exchange lives and dies with the run: no fsync per write (see fs_store)
    private = f"{(run_dir / 'exchange').resolve().as_uri()}?durable=false"
    exchange_uri = config.exchange.uri or private
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    return run_dir, exchange_uri


def is_run_folder(path: Path) -> bool:
    """A folder ``start_run`` made: it holds the run's config.json."""
    return (path / "config.json").is_file()


def resolve_run_folder(path: Path, needs: str | None = None) -> tuple[Path, str | None]:
    """The run folder ``path`` names: itself, or the newest run inside the ``--out`` folder.

    ``fedsilo simulate --out D`` writes ``D/<run-id>/``; operators hand the commands ``D``.
    ``needs`` names a file the run must hold (``metrics.jsonl``: a run that finished), so a
    run that stopped early is passed over. Returns the run folder and, when it was chosen
    among several, a line saying which.
    """
    if is_run_folder(path):
        return path, None
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder; pass a run folder or simulate's --out folder")
    runs = [child for child in path.iterdir() if child.is_dir() and is_run_folder(child)]
    usable = [run for run in runs if needs is None or (run / needs).is_file()]
    if not usable:
        holding = f" with a {needs}" if needs and runs else ""
        raise ConfigError(
            f"{path} holds no run folder{holding} (no config.json in it or its subfolders); "
            "pass the folder given to `fedsilo simulate --out` or one of its run folders"
        )
    newest = max(usable, key=lambda run: ((run / "config.json").stat().st_mtime, run.name))
    kind = "finished run" if needs == "metrics.jsonl" else "run"
    note = f"run folder: {newest} (the newest {kind} of {len(runs)} in {path})"
    return newest, note
