"""What a simulation stopped by Ctrl-C leaves: metrics.jsonl up to its last closed round.

The exchange already holds every closed round (the aggregator resumes from it under the same
``--run-id``); this writes the run folder's metrics.jsonl from it, as ``finish_run`` would
at the end, and marks the folder interrupted so that "the newest finished run" passes it over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedsilo.engine.federation import open_exchange, rows_from_exchange
from fedsilo.engine.metrics_row import MetricsRow, write_metrics
from fedsilo.engine.run_folder import record_outcome, run_exchange_uri
from fl_core.config import FederationConfig


@dataclass(frozen=True)
class StoppedRun:
    last_closed: int  # the last training round whose result.json is written (0: none)
    rows: int  # lines written to metrics.jsonl


def close_interrupted_run(config: FederationConfig, run_dir: Path) -> StoppedRun:
    """Write metrics.jsonl up to the last closed training round; mark the run interrupted."""
    exchange = open_exchange(run_exchange_uri(config, run_dir), config)
    rows = rows_from_exchange(exchange, config.rounds)
    last_closed = 0
    while last_closed < config.rounds and exchange.read_result(last_closed + 1) is not None:
        last_closed += 1
    trained = exchange.read_result(last_closed) if last_closed else None
    if trained is not None and all(row.round != last_closed for row in rows):
        rows.append(MetricsRow.unevaluated(trained))
    write_metrics(run_dir / "metrics.jsonl", rows)
    record_outcome(run_dir, "interrupted", f"stopped after round {last_closed}")
    return StoppedRun(last_closed=last_closed, rows=len(rows))
