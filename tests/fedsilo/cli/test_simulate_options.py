"""``fedsilo simulate`` options: conflicts refused, option errors exit 2, notes said once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedsilo.cli.output import printed_exchange
from fedsilo.engine.secagg_quorum import fit_secagg_quorum
from fedsilo.testing.cli import run_fedsilo
from fl_core.config import load_config
from fl_core.errors import ConfigError


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--twin", "--data", "prepared"], "--data and --twin name two data sources"),
        (["--data", "prepared", "--hospitals", "3"], "--data brings its own; drop --hospitals"),
    ],
)
def test_data_options_that_exclude_each_other_are_refused(tmp_path: Path, args, needle) -> None:
    done = run_fedsilo("simulate", *args, "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # refused before any run folder


def test_a_dp_delta_too_large_for_the_hospitals_is_an_option_error(tmp_path: Path) -> None:
    done = run_fedsilo(
        "simulate", "--hospitals", "3", "--rounds", "1", "--dp-epsilon", "2",
        "--dp-delta", "0.5", "--out", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = [line for line in _lines(done.stderr) if line.startswith("error:")]
    assert "--dp-delta" in line and "use delta <" in line
    assert "hospital worker" not in done.stderr and "Traceback" not in done.stderr


def test_secure_aggregation_raises_a_default_quorum_once_and_refuses_a_low_one() -> None:
    config = load_config(
        overrides={"privacy.secagg.enabled": True, "data.synthetic.hospitals": 6, "seed": 3}
    )
    fitted, notes = fit_secagg_quorum(config, 6)
    assert fitted.round.min_sites == 4 and config.round.min_sites == 2
    assert len(notes) == 1 and "raised from 2 to 4" in notes[0]
    assert fitted.seed == 3 and fitted.privacy.secagg.enabled  # nothing else changed
    assert fitted.model_dump(exclude={"round"}) == config.model_dump(exclude={"round"})
    assert fit_secagg_quorum(fitted, 6) == (fitted, [])
    assert fit_secagg_quorum(load_config(), 6)[1] == []  # secure aggregation off
    chosen = load_config(
        overrides={"privacy.secagg.enabled": True, "round.min_sites": 3,
                   "data.synthetic.hospitals": 6}
    )  # fmt: skip
    with pytest.raises(ConfigError, match="use --min-sites 4 or more"):
        fit_secagg_quorum(chosen, 6)


@pytest.mark.slow
def test_secure_aggregation_notes_the_quorum_once_not_every_round(tmp_path: Path) -> None:
    done = run_fedsilo(
        "simulate", "--hospitals", "6", "--rounds", "3", "--secure-aggregation",
        "--out", str(tmp_path), "--run-id", "s", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    notes = [line for line in _lines(done.stderr) if line.startswith("note:")]
    assert len(notes) == 1 and "quorum round.min_sites raised from 2 to 4" in notes[0]
    assert "secagg_quorum_below_threshold" not in done.stderr + done.stdout


def test_the_runs_own_exchange_is_printed_in_words() -> None:
    uri = "file:///tmp/runs/r/exchange?durable=false"
    assert printed_exchange(uri) == (
        "file:///tmp/runs/r/exchange (the run's own folder, written without fsync)"
    )
    assert printed_exchange("s3://bucket/prefix") == "s3://bucket/prefix"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI is not installed")
def test_mpi_output_written_to_files_carries_no_terminal_codes(tmp_path: Path) -> None:
    """mpirun hands its ranks a pseudo-terminal; captured output must still be plain text."""
    done = run_fedsilo(
        "simulate", "--engine", "mpi", "--hospitals", "3", "--rounds", "2", "--workers", "2",
        "--out", str(tmp_path), "--run-id", "m", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "federated rounds" in done.stdout and "round   2" in done.stderr
    assert "\x1b" not in done.stdout and "\x1b" not in done.stderr
