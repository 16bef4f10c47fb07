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
