"""``--tensorboard DIR``: per-round metrics as TensorBoard scalars, read back with TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_event_files_hold_per_round_auroc(finished_run: Path) -> None:
    log_dir = finished_run.parent / "tensorboard"
    assert list(log_dir.glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    assert "federation/auroc" in accumulator.Tags()["scalars"]
    rows = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    events = accumulator.Scalars("federation/auroc")
    assert [e.step for e in events] == [row["round"] for row in rows]
    assert [e.value for e in events] == pytest.approx([row["auroc"] for row in rows], abs=1e-6)
    assert {"federation/auprc", "federation/sites_accepted"} <= set(accumulator.Tags()["scalars"])
