"""A simulation's parameters, per-round metrics and final model in MLflow (``--mlflow URI``).

ML teams already look at their MLflow tracking server; a run there carries the resolved
config as parameters, each metrics row as step-indexed metrics, and the run folder's
model.safetensors and metrics.jsonl as artifacts. A plain folder (or ``file:`` URI) is a
local MLflow store, read by ``mlflow ui --backend-store-uri``; MLflow 3 asks for an explicit
opt-in to its folder store (``MLFLOW_ALLOW_FILE_STORE``), which naming a folder is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.engine.federation import SimulationEvents
from fedsilo.engine.metrics_row import MetricsRow
from fedsilo.ops.forwarding_events import ForwardingEvents
from fl_core.errors import ConfigError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from fl_core.config import FederationConfig

EXPERIMENT = "fedsilo"
_MAX_PARAM_CHARS = 500  # MLflow's limit on one parameter's value


def tracking_uri(target: str) -> str:
    """``target`` as MLflow reads it: a URI as given, a plain folder as its ``file:`` URI."""
    if "://" in target or target.startswith("file:"):
        return target
    return Path(target).resolve().as_uri()


def open_client(target: str) -> MlflowClient:
    """An MLflow client of ``target``; a store MLflow cannot open is one line (exit 2)."""
    import os

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(target)
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # reach the store now, not mid-run
    except (MlflowException, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--mlflow {target}: {first}; check the URI or the folder") from None
    return client


def flat_params(config: FederationConfig) -> dict[str, str]:
    """The resolved config as dotted parameters (``strategy.name``, ``round.min_sites``...)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = str(value)[:_MAX_PARAM_CHARS]

    walk("", config.model_dump(mode="json"))
    return flat


class MlflowEvents(ForwardingEvents):
    """Logs each round's metrics row to one MLflow run; passes every hook on to ``inner``."""

    def __init__(
        self, target: str, config: FederationConfig, run_name: str, inner: SimulationEvents
    ) -> None:
        super().__init__(inner)
        self.client = open_client(target)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(EXPERIMENT)
        )
        run = self.client.create_run(experiment_id, run_name=run_name)
        self.run_id: str = run.info.run_id
        params = flat_params(config)
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
        self.logged_rounds: set[int] = set()

    def row_ready(self, row: MetricsRow) -> None:
        from mlflow.entities import Metric

        step = row.round
        self.logged_rounds.add(step)
        stamp = int(time.time() * 1000)
        metrics = [Metric(name, value, stamp, step) for name, value in row.scalars().items()]
        metrics += [
            Metric(f"reference_auroc.{name}", float(value), stamp, step)
            for name, value in row.reference_auroc.items()
            if value is not None
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path, rows: Sequence[MetricsRow] = ()) -> None:
        """The final model and metrics.jsonl as artifacts; the MLflow run ends as finished.

        ``rows``: the run's metrics rows; those of rounds closed before this process started
        (a resumed run) are logged now, so the MLflow run holds every round.
        """
        for row in rows:
            if row.round not in self.logged_rounds:
                self.row_ready(row)
        for name in ("model.safetensors", "metrics.jsonl"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        self.client.set_terminated(self.run_id, "FINISHED")

    def stop(self, status: str) -> None:
        """End the MLflow run without a model: ``FAILED`` or ``KILLED`` (interrupted)."""
        self.client.set_terminated(self.run_id, status)


class MlflowTracking:
    """``server run --mlflow``: the MLflow run opens once the aggregator's config is fitted
    and its run folder named (``fedsilo.engine.services.RunTracking``)."""

    def __init__(self, target: str) -> None:
        open_client(target)  # a store MLflow cannot open stops the command before any round
        self.target = target
        self.events: MlflowEvents | None = None

    def open(self, config: FederationConfig, run_name: str) -> MlflowEvents:
        self.events = MlflowEvents(self.target, config, run_name, SimulationEvents(config.rounds))
        return self.events

    def finished(self, run_dir: Path, rows: Sequence[MetricsRow]) -> None:
        if self.events is not None:
            self.events.finish(run_dir, rows)

    def stopped(self, status: str) -> None:
        if self.events is not None:
            self.events.stop(status)


def with_mlflow(
    target: str, config: FederationConfig, run_name: str, inner: SimulationEvents
) -> MlflowEvents:
    """``inner``'s hooks plus an MLflow run named ``run_name`` at ``target``."""
    return MlflowEvents(target, config, run_name, inner)
