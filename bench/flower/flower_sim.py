"""The comparison's federation on Flower's simulation engine (runs in the Flower environment).

Run by ``bench/flower_compare.py`` as ``.venv-flower/bin/python bench/flower/flower_sim.py``
with ``PYTHONPATH`` holding the repository root, so that the ``ClientApp`` trains with
fedsilo's ``TabularTrainer`` on the same synthetic hospitals and seeds as fedsilo and the plain
loop (``bench/_federation.py``): only the orchestration is Flower's. The ``ServerApp`` runs
Flower's own message-API ``FedAvg`` (weighted by ``num-examples``) for ``--rounds`` rounds with
federated evaluation on every hospital's test split each round, as fedsilo does.

It writes a JSON result (in-process seconds, per-round seconds, per-round AUROC from the summed
evaluation histograms) and the final model as safetensors; the caller measures the whole
process from outside.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import safetensors.numpy
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from bench import _federation
from bench.flower.flower_client import client_app, sum_histograms
from fl_core.config import FederationConfig


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, noting when each round starts so steady rounds can be timed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.round_started: list[float] = []

    def configure_train(self, server_round: int, *args: Any, **kwargs: Any) -> Any:
        self.round_started.append(time.perf_counter())
        return super().configure_train(server_round, *args, **kwargs)


def build_server_app(config: FederationConfig, out: Path, weights_out: Path) -> ServerApp:
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        del context
        started = time.perf_counter()
        sites = _federation.load_sites(config)
        initial = _federation.initial_weights(config, sites)
        del sites
        hospitals = config.data.synthetic.hospitals
        strategy = TimedFedAvg(
            fraction_train=1.0,
            fraction_evaluate=1.0,
            min_train_nodes=hospitals,
            min_evaluate_nodes=hospitals,
            min_available_nodes=hospitals,
            evaluate_metrics_aggr_fn=sum_histograms,
        )
        config_record = ConfigRecord({"federation": config.model_dump_json()})
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord({k: torch.from_numpy(v) for k, v in initial.items()}),
            num_rounds=config.rounds,
            train_config=config_record,
            evaluate_config=config_record,
        )
        ended = time.perf_counter()
        bounds = [*strategy.round_started, ended]
        final = {k: v.numpy() for k, v in result.arrays.to_torch_state_dict().items()}
        safetensors.numpy.save_file(final, str(weights_out))
        rounds = sorted(result.evaluate_metrics_clientapp)
        if rounds != list(range(1, config.rounds + 1)):
            # Flower logs client failures and carries on; a run without every round's
            # evaluation is not comparable, so it must not produce numbers.
            raise SystemExit(f"Flower evaluated rounds {rounds}, not 1..{config.rounds}")
        out.write_text(
            json.dumps(
                {
                    "server_seconds": ended - started,
                    "round_seconds": [b - a for a, b in itertools.pairwise(bounds)],
                    "round_auroc": [
                        float(result.evaluate_metrics_clientapp[r]["auroc"]) for r in rounds
                    ],
                }
            )
        )

    return server_app


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="FederationConfig JSON")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs (one hospital per CPU)")
    args = parser.parse_args()
    config = FederationConfig.model_validate_json(args.config.read_text())
    started = time.perf_counter()
    run_simulation(
        server_app=build_server_app(config, args.out, args.weights),
        client_app=client_app,
        num_supernodes=config.data.synthetic.hospitals,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": args.cpus, "num_gpus": 0},
        },
    )
    seconds = time.perf_counter() - started
    result = json.loads(args.out.read_text())  # written by the ServerApp
    result["seconds"] = seconds
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
