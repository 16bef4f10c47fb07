"""``simulate --mlflow DIR --tensorboard DIR`` and ``server run --out DIR --mlflow DIR``: the
run where ML teams already look.

The MLflow run is read back with MLflow's own client from the local store the command wrote;
TensorBoard's events are read back with TensorBoard's, one subfolder per run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fedsilo.testing.cli import run_fedsilo
from tests.fedsilo.engine._folder_federation import FolderFederation

ROUNDS = 2


@pytest.mark.slow
def test_mlflow_holds_params_per_round_metrics_and_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    done = run_fedsilo(
        "simulate", "--hospitals", "3", "--rounds", str(ROUNDS), "--out", str(tmp_path / "runs"),
        "--run-id", "tracked", "--mlflow", "mlruns", "--tensorboard", "tb", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [
        json.loads(line)
        for line in (tmp_path / "runs" / "tracked" / "metrics.jsonl").read_text().splitlines()
    ]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("fedsilo")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert f"mlflow:   run {run.info.run_id}" in done.stdout
    assert run.data.params["rounds"] == str(ROUNDS)
    assert run.data.params["data.synthetic.hospitals"] == "3"
    history = client.get_metric_history(run.info.run_id, "auroc")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [row["auroc"] for row in rows]
    )
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"model.safetensors", "metrics.jsonl"}
    model = Path(client.download_artifacts(run.info.run_id, "model.safetensors", str(tmp_path)))
    assert model.read_bytes() == (tmp_path / "runs" / "tracked" / "model.safetensors").read_bytes()
    [run_folder] = (tmp_path / "tb").iterdir()  # one subfolder per run, named by its run id
    assert run_folder.name == "tracked"
    accumulator = EventAccumulator(str(run_folder))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("federation/auroc")] == [1, 2]


def test_an_unreachable_tracking_server_is_one_line_before_any_run(tmp_path: Path) -> None:
    done = run_fedsilo(
        "simulate", "--hospitals", "3", "--rounds", "1", "--out", str(tmp_path / "runs"),
        "--mlflow", "http://127.0.0.1:9", cwd=tmp_path,
        env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--mlflow http://127.0.0.1:9" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_server_run_logs_its_run_folder_to_mlflow_as_simulate_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    federation = FolderFederation(tmp_path, "sepsis", rounds=ROUNDS)
    store, out = tmp_path / "mlruns", tmp_path / "runs"
    args = ["server", "run", "--config", str(federation.config_path), "--out", str(out)]
    args += ["--mlflow", str(store), "--log-format", "json"]
    server = federation.group.spawn("server", args, federation.env())
    hospitals = [federation.start_client(site, None) for site in ("site-001", "site-002")]
    federation.finish(server, *hospitals)

    [run_dir] = out.iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("fedsilo")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert run.data.params["federation_id"] == "sepsis"
    assert run.data.params["rounds"] == str(ROUNDS)
    history = sorted(client.get_metric_history(run.info.run_id, "auroc"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([row["auroc"] for row in rows])
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"model.safetensors", "metrics.jsonl"}
    model = Path(client.download_artifacts(run.info.run_id, "model.safetensors", str(tmp_path)))
    assert model.read_bytes() == (run_dir / "model.safetensors").read_bytes()


def test_server_run_mlflow_without_a_run_folder_is_one_line(tmp_path: Path) -> None:
    done = run_fedsilo(
        "server", "run", "--exchange", (tmp_path / "exchange").as_uri(),
        "--mlflow", str(tmp_path / "mlruns"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "add --out DIR" in lines[0]
    assert "Traceback" not in done.stderr
