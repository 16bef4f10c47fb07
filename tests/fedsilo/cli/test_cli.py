"""The command line as a user meets it: exit codes and one-line errors, examples that run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsilo.testing.cli import run_fedsilo

REPO = Path(__file__).resolve().parents[3]


def fedsilo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_fedsilo(*args, cwd=cwd)


def simulate(
    tmp_path: Path, run_id: str, hospitals: int, rounds: int, *args: str
) -> subprocess.CompletedProcess[str]:
    """``fedsilo simulate`` with ``args``, its run folder ``tmp_path/run_id``."""
    return fedsilo(
        "simulate", "--hospitals", str(hospitals), "--rounds", str(rounds), *args,
        "--out", str(tmp_path), "--run-id", run_id, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rounds", "-1"], "rounds:"),
        (["--min-sites", "50"], "round.min_sites 50 > data.synthetic.hospitals 20"),
        (["--data", "/no/such/folder"], "data.path /no/such/folder"),
        (
            ["--exchange", "ftp://x/y"],
            "exchange.uri: use file:///absolute/path or s3://bucket/prefix",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    done = fedsilo("simulate", *args, "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]
    assert "Traceback" not in done.stderr


def test_unknown_key_in_config_file(tmp_path):
    config = tmp_path / "federation.yaml"
    config.write_text("rounds: 2\nround:\n  min_site: 2\n")
    done = fedsilo("simulate", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert "round.min_site: unknown key" in done.stderr


@pytest.mark.slow
def test_small_simulation_prints_table_and_writes_run(tmp_path):
    done = simulate(tmp_path, "small", 4, 2)
    assert done.returncode == 0, done.stderr
    assert "AUROC" in done.stdout and "federated rounds" in done.stdout
    rows = [json.loads(x) for x in (tmp_path / "small" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[-1]["auroc"] > 0.7


@pytest.mark.slow
def test_custom_trainer_example_trains_through_simulate(tmp_path):
    done = simulate(
        tmp_path, "custom", 6, 3, "--app", f"{REPO / 'examples' / 'custom_trainer.py'}:app"
    )
    assert done.returncode == 0, done.stderr
    model = (tmp_path / "custom" / "model.safetensors").read_bytes()
    from fl_core.serialisation import read_tensor_specs

    assert "interaction.0.weight" in read_tensor_specs(model)
    rows = [json.loads(x) for x in (tmp_path / "custom" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["auroc"] > 0.75


def test_json_logs_carry_no_tensors(tmp_path):
    done = simulate(tmp_path, "logs", 3, 1, "--log-format", "json", "--log-level", "INFO")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    names = {e["event"] for e in events}
    assert {"global_published", "update_accepted", "round_closed"} <= names
    assert all(e.get("run_id") == "logs" for e in events)
    assert all(len(json.dumps(e)) < 2000 for e in events)


def test_the_command_line_imports_no_heavy_library_before_a_command_needs_it():
    """Every command (and --help) would pay ~1.5 CPU-s for torch, pandas, boto3, sklearn."""
    import subprocess

    code = (
        "import sys, fedsilo.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'pandas', 'boto3', 'sklearn'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "--rounds", "x"], "Error: Invalid value for '--rounds'"),
        (["status"], "needs a run folder (fedsilo status runs/) or both --federation"),
        (["no-such-command"], "Error: No such command 'no-such-command'"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(tmp_path, args, needle):
    """typer ships its own click: its usage errors must not fall through as tracebacks."""
    done = fedsilo(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


def test_krum_on_a_small_federation_names_the_flag_before_training(tmp_path):
    done = fedsilo("simulate", "--hospitals", "4", "--strategy", "krum", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "this federation has 4: add hospitals (--hospitals 5)" in done.stderr
    assert not (tmp_path / "runs").exists()  # refused before any run folder or worker
    done = fedsilo(
        "simulate", "--hospitals", "6", "--strategy", "krum", "--min-sites", "3", cwd=tmp_path
    )
    assert done.returncode == 2 and "use --min-sites 5 or more" in done.stderr


def test_krum_raises_a_default_quorum_and_says_so():
    from fedsilo.engine.strategy_fit import fit_strategy
    from fl_core.config import load_config

    config = load_config(overrides={"strategy.name": "krum", "data.synthetic.hospitals": 5})
    fitted, notes = fit_strategy(config, 5)
    assert fitted.round.min_sites == 5 and config.round.min_sites == 2
    assert notes and "raised from 2 to 5" in notes[0]
    same, none = fit_strategy(load_config(), 20)
    assert none == [] and same.round.min_sites == 2
    trimmed = load_config(overrides={"strategy.name": "trimmed_mean"})
    assert "it is plain FedAvg" in fit_strategy(trimmed, 4)[1][0]
    assert fit_strategy(trimmed, 5)[1] == []


def test_privacy_flags_are_in_help_and_set_the_config(tmp_path):
    from fedsilo.cli.options import privacy_overrides
    from fl_core.config import load_config

    for command in (["simulate"], ["server", "run"]):
        shown = fedsilo(*command, "--help", cwd=tmp_path)
        for flag in ("--dp-epsilon", "--dp-delta", "--secure-aggregation"):
            assert flag in shown.stdout, (command, flag)
    sample = load_config(overrides=privacy_overrides(3.0, 1e-6, "sample", True))
    assert sample.privacy.dp_sgd is not None and sample.privacy.dp_sgd.target_epsilon == 3.0
    assert sample.privacy.dp_sgd.delta == 1e-6 and sample.privacy.secagg.enabled
    client = load_config(overrides=privacy_overrides(8.0, None, "client", None))
    assert client.privacy.dp_fedavg is not None and client.privacy.dp_fedavg.target_epsilon == 8
    assert client.privacy.dp_sgd is None and not client.privacy.secagg.enabled


def test_simulate_with_dp_prints_the_epsilon_each_hospital_spent(tmp_path):
    done = fedsilo(
        "simulate",
        "--hospitals",
        "3",
        "--rounds",
        "1",
        "--dp-epsilon",
        "3",
        "--out",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("privacy: DP-SGD")]
    assert "site-001" in line and "site-003" in line


def test_server_run_with_secure_aggregation_refuses_unregistered_keys_first(tmp_path):
    """Before the hospitals report anything: not at round 1, after they trained."""
    exchange = f"file://{tmp_path / 'exchange'}"
    done = fedsilo(
        "server", "run", "--exchange", exchange, "--sites", "site-001,site-002",
        "--secure-aggregation", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "have no secagg public key" in done.stderr
    assert not list((tmp_path / "exchange").rglob("*.moments.json"))


def test_no_arguments_prints_usage_and_exits_2(tmp_path):
    done = fedsilo(cwd=tmp_path)
    assert done.returncode == 2
    assert "Usage: " in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
