"""What a simulation stopped by Ctrl-C leaves: metrics.jsonl up to its last closed round.

The exchange already holds every closed round (the aggregator resumes from it under the same
``--run-id``); this writes the run folder's metrics.jsonl from it, as ``finish_run`` would
at the end, and marks the folder interrupted so that "the newest finished run" passes it over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsilo.engine.federation import metrics_row, open_exchange, rows_from_exchange
from fedsilo.engine.run_folder import record_outcome, run_exchange_uri
from fl_core.config import FederationConfig
from fl_core.exchange.manifests import RoundResult


@dataclass(frozen=True)
class StoppedRun:
    last_closed: int  # the last training round whose result.json is written (0: none)
    rows: int  # lines written to metrics.jsonl


def unevaluated_row(trained: RoundResult) -> dict[str, Any]:
    """The metrics row of a closed round whose model no later round evaluated: counts only."""
    row = metrics_row(trained, trained)
    row.update(
        auroc=None,
        auprc=None,
        loss=None,
        reference_auroc={},
        calibration=None,
        reference_calibration={},
        eval_sites=0,
    )
    return row


def close_interrupted_run(config: FederationConfig, run_dir: Path) -> StoppedRun:
    """Write metrics.jsonl up to the last closed training round; mark the run interrupted."""
    exchange = open_exchange(run_exchange_uri(config, run_dir), config)
    rows = rows_from_exchange(exchange, config.rounds)
    last_closed = 0
    while last_closed < config.rounds and exchange.read_result(last_closed + 1) is not None:
        last_closed += 1
    trained = exchange.read_result(last_closed) if last_closed else None
    if trained is not None and all(row["round"] != last_closed for row in rows):
        rows.append(unevaluated_row(trained))
    with open(run_dir / "metrics.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    record_outcome(run_dir, "interrupted", f"stopped after round {last_closed}")
    return StoppedRun(last_closed=last_closed, rows=len(rows))
