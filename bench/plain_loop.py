"""The floor: the same federation as a plain PyTorch loop in one process, no framework.

Why: a federated framework's overhead (processes, messages, files, verification) only means
something next to the cheapest way to compute the same models. This loop trains the hospitals
one after another, averages their weights by hand (FedAvg weighted by training examples) and
evaluates the global model on the pooled test splits with scikit-learn after every round,
the work fedsilo and Flower also do per round. Training is fedsilo's ``TabularTrainer`` with
the same seeds (``bench/_federation.py``), so the final model matches fedsilo's up to float
summation order.

``--processes 2`` gives the plain loop the cores fedsilo's simulation uses: the hospitals of a
round are trained in that many worker processes (one torch thread each), the parent averages
and evaluates. Hospitals are split between the workers as fedsilo places them (longest first
by planned training steps, ``fedsilo.engine.placement.balanced``): dealt round-robin, the
long-tailed sizes left one worker training for longer than the other every round, and that
baseline was slower than one that shares the cores well. The averaging order is the
hospitals' order, so the model is the same as the one-process loop's.

``python -m bench.plain_loop --hospitals 20 --rounds 10 --out result.json`` runs it as a whole
process (what ``bench/flower_compare.py`` times from outside); ``run_plain`` runs it in
process. There is no ``main(quick)``: it is a part of the comparison, not a benchmark alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import safetensors.numpy
import torch

from bench import _federation
from fedsilo.engine.placement import balanced
from fl_client.tabular import TabularTrainer, planned_steps
from fl_core.config import FederationConfig
from fl_core.data.base import SiteData
from fl_core.types import Weights


@dataclass(frozen=True)
class PlainResult:
    """What one run measured: ``seconds`` from data loading to the final evaluation."""

    seconds: float
    setup_seconds: float
    round_seconds: list[float]
    round_auroc: list[float]
    torch_threads: int
    processes: int = 1


_worker: tuple[FederationConfig, list[SiteData], TabularTrainer] | None = None
"""A training worker's config, hospitals and trainer (set once per worker process)."""


def _start_worker(config: FederationConfig) -> None:
    global _worker
    torch.set_num_threads(1)
    _worker = (config, _federation.load_sites(config), _federation.new_trainer(config))


def _train_share(
    indices: Sequence[int], weights: Weights, round_index: int
) -> list[tuple[int, Weights, int]]:
    """In a worker: the local rounds of hospitals ``indices`` from ``weights``."""
    assert _worker is not None, "worker not started"
    config, sites, trainer = _worker
    trained = []
    for index in indices:
        local, num_examples, _ = _federation.train_site(
            trainer, sites[index], weights, config, round_index
        )
        trained.append((index, local, num_examples))
    return trained


def run_plain(
    config: FederationConfig, threads: int | None = None, processes: int = 1
) -> tuple[PlainResult, Weights]:
    """Train ``config.rounds`` rounds of FedAvg over every hospital; return timings and model.

    ``processes`` > 1 trains each round's hospitals in that many worker processes (started,
    with their data loaded, before the rounds: counted in ``setup_seconds``).
    """
    started = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    sites = _federation.load_sites(config)
    weights = _federation.initial_weights(config, sites)
    trainer = _federation.new_trainer(config)
    pool = None
    if processes > 1:
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            processes, context, initializer=_start_worker, initargs=(config,)
        )
        for ready in [pool.submit(_train_share, [], weights, 0) for _ in range(processes)]:
            ready.result()  # every worker started and holding its data
    shares = _shares(config, sites, processes)
    setup_seconds = time.perf_counter() - started
    round_seconds: list[float] = []
    round_auroc: list[float] = []
    try:
        for round_index in range(1, config.rounds + 1):
            round_started = time.perf_counter()
            updates = _train_round(config, sites, trainer, weights, round_index, pool, shares)
            weights = _federation.weighted_average(updates)
            round_auroc.append(_federation.pooled_auroc(trainer, weights, sites))
            round_seconds.append(time.perf_counter() - round_started)
    finally:
        if pool is not None:
            pool.shutdown()
    result = PlainResult(
        seconds=time.perf_counter() - started,
        setup_seconds=setup_seconds,
        round_seconds=round_seconds,
        round_auroc=round_auroc,
        torch_threads=torch.get_num_threads(),
        processes=processes,
    )
    return result, weights


def _shares(config: FederationConfig, sites: Sequence[SiteData], processes: int) -> list[list[int]]:
    """Hospital indices per worker, balanced by planned training steps (as fedsilo places)."""
    index = {site.site_id: i for i, site in enumerate(sites)}
    cost = {s.site_id: float(planned_steps(s.train.num_examples, config.training)) for s in sites}
    return [[index[site] for site in part] for part in balanced(list(index), processes, cost)]


def _train_round(
    config: FederationConfig,
    sites: Sequence[SiteData],
    trainer: TabularTrainer,
    weights: Weights,
    round_index: int,
    pool: ProcessPoolExecutor | None,
    shares: Sequence[Sequence[int]],
) -> list[tuple[Weights, int]]:
    """Every hospital's local round, in the hospitals' order (so the average is the same)."""
    if pool is None:
        updates = []
        for site in sites:
            local, num_examples, _ = _federation.train_site(
                trainer, site, weights, config, round_index
            )
            updates.append((local, num_examples))
        return updates
    futures = [pool.submit(_train_share, share, weights, round_index) for share in shares]
    trained = sorted((item for f in futures for item in f.result()), key=lambda item: item[0])
    return [(local, num_examples) for _, local, num_examples in trained]


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plain_loop", description=__doc__)
    parser.add_argument("--hospitals", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mean-stays", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="worker processes training the hospitals"
    )
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    parser.add_argument("--weights", type=Path, help="also write the final model (safetensors)")
    args = parser.parse_args(argv)
    config = _federation.benchmark_config(args.hospitals, args.rounds, args.mean_stays, args.seed)
    result, weights = run_plain(config, args.threads, args.processes)
    args.out.write_text(json.dumps(asdict(result)))
    if args.weights is not None:
        safetensors.numpy.save_file(weights, str(args.weights))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
