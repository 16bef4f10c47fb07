"""``make chaos`` in small: real server and client processes, hostile files in their exchange,
a hostile member's attacks (planted and junk keys, crash headers, malformed reports, an
inflated ``num_examples``, non-ASCII account ids), the aggregator SIGKILLed at every write of
round 1's close and at random instants, hospitals killed entering training and mid-write.
Every figure must meet its goal."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from chaos.suite import run, table

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)  # four federations on one side, the kill runs on the other
def test_quick_chaos_run_meets_every_goal(tmp_path: Path) -> None:
    figures = run(tmp_path, quick=True, kills=4, only={"hostile", "members", "crash"})
    console = Console(width=160, record=True)
    console.print(table(figures))
    missed = [f for f in figures if not f.ok]
    assert not missed, console.export_text()
    groups = {f.group for f in figures}
    assert groups == {
        "hostile-folder",
        "members-folder",
        "overclaim-folder",
        "onboarding",
        "kill-at-writes",
    }
