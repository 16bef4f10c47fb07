"""The floor: the same federation as a plain PyTorch loop in one process, no framework.

Why: a federated framework's overhead (processes, messages, files, verification) only means
something next to the cheapest way to compute the same models. This loop trains the hospitals
one after another, averages their weights by hand (FedAvg weighted by training examples) and
evaluates the global model on the pooled test splits with scikit-learn after every round,
the work fedsilo and Flower also do per round. Training is fedsilo's ``TabularTrainer`` with
the same seeds (``bench/_federation.py``), so the final model matches fedsilo's up to float
summation order.

``python -m bench.plain_loop --hospitals 20 --rounds 10 --out result.json`` runs it as a whole
process (what ``bench/flower_compare.py`` times from outside); ``run_plain`` runs it in
process. There is no ``main(quick)``: it is a part of the comparison, not a benchmark alone.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import safetensors.numpy
import torch

from bench import _federation
from fl_core.config import FederationConfig
from fl_core.types import Weights


@dataclass(frozen=True)
class PlainResult:
    """What one run measured: ``seconds`` from data loading to the final evaluation."""

    seconds: float
    setup_seconds: float
    round_seconds: list[float]
    round_auroc: list[float]
    torch_threads: int


def run_plain(config: FederationConfig, threads: int | None = None) -> tuple[PlainResult, Weights]:
    """Train ``config.rounds`` rounds of FedAvg over every hospital; return timings and model."""
    started = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    sites = _federation.load_sites(config)
    weights = _federation.initial_weights(config, sites)
    trainer = _federation.new_trainer(config)
    setup_seconds = time.perf_counter() - started
    round_seconds: list[float] = []
    round_auroc: list[float] = []
    for round_index in range(1, config.rounds + 1):
        round_started = time.perf_counter()
        updates = []
        for site in sites:
            local, num_examples, _ = _federation.train_site(
                trainer, site, weights, config, round_index
            )
            updates.append((local, num_examples))
        weights = _federation.weighted_average(updates)
        round_auroc.append(_federation.pooled_auroc(trainer, weights, sites))
        round_seconds.append(time.perf_counter() - round_started)
    result = PlainResult(
        seconds=time.perf_counter() - started,
        setup_seconds=setup_seconds,
        round_seconds=round_seconds,
        round_auroc=round_auroc,
        torch_threads=torch.get_num_threads(),
    )
    return result, weights


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plain_loop", description=__doc__)
    parser.add_argument("--hospitals", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mean-stays", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    parser.add_argument("--weights", type=Path, help="also write the final model (safetensors)")
    args = parser.parse_args(argv)
    config = _federation.benchmark_config(args.hospitals, args.rounds, args.mean_stays, args.seed)
    result, weights = run_plain(config, args.threads)
    args.out.write_text(json.dumps(asdict(result)))
    if args.weights is not None:
        safetensors.numpy.save_file(weights, str(args.weights))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
