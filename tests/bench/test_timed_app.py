"""The scale benchmark's accounting: hospital lines and the coordinating side's start-up."""

from pathlib import Path

import pytest

from bench import _timed_app
from bench._timed_app import COORDINATOR_SUFFIX, TIMINGS_ENV, read_timings, timed_aggregator
from fl_core.config import FederationConfig


def test_read_timings_sums_hospital_calls_and_the_coordinators_start_up(tmp_path: Path) -> None:
    (tmp_path / "host-1.tsv").write_text(
        "startup\t1.5\ntrain\t2.0\ntotal\t3.6\nevaluate\t0.5\ntotal\t4.2\n", encoding="utf-8"
    )
    (tmp_path / "host-2.tsv").write_text("startup\t1.0\ntrain\t3.0\ntotal\t4.1\n", "utf-8")
    (tmp_path / f"host-9{COORDINATOR_SUFFIX}").write_text(
        "aggregator\t2.25\nfork_server\t2.5\n", "utf-8"
    )
    timings = read_timings(tmp_path)
    assert (timings.train_s, timings.evaluate_s, timings.startup_s) == (5.0, 0.5, 2.5)
    assert timings.hospital_processes_s == pytest.approx(8.3)
    assert timings.coordinator_startup_s == pytest.approx(4.75)
    assert timings.processes == 2  # the coordinator's file is not a hospital process
    assert timings.compute_per_process_s == (2.5, 3.0)


def test_timed_aggregator_records_this_process_and_its_fork_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TIMINGS_ENV, str(tmp_path))
    monkeypatch.setattr(_timed_app, "_fork_server_cpu_s", lambda: 1.25)
    timed_aggregator(FederationConfig.model_validate({"federation_id": "f1"}))
    lines = next(tmp_path.glob(f"*{COORDINATOR_SUFFIX}")).read_text("utf-8").splitlines()
    kinds = dict(line.split("\t") for line in lines)
    assert float(kinds["aggregator"]) > 0
    assert float(kinds["fork_server"]) == 1.25
    assert read_timings(tmp_path).coordinator_startup_s == pytest.approx(
        float(kinds["aggregator"]) + 1.25
    )
