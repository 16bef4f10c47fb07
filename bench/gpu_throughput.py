"""GPU THROUGHPUT: client training stays per second on CUDA next to CPU (issue 8).

Why: hospitals train on a GPU when their task has one (DESIGN.md, a round, step 2), and the
default model is a small MLP, for which a GPU may not pay off at the default batch size.
This measures fedsilo's own ``TabularTrainer.train`` (the code a hospital runs) on one large
synthetic hospital, on ``cpu`` and on ``cuda``, at the default batch size and a large one.

It needs a GPU: on a machine without one it prints "no GPU on this machine" and measures
nothing (run it where one is lent: ``python -m bench --only gpu_throughput``).
"""

from __future__ import annotations

import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from bench import _federation
from fl_client.tabular import TabularTrainer
from fl_client.trainer import derive_seed
from fl_core.config import FederationConfig, TrainingConfig

FULL_STAYS = 50_000
QUICK_STAYS = 5_000
BATCH_SIZES = (128, 1024)
MIN_TOTAL_S = 2.0


def stays_per_second(
    config: FederationConfig, device: str, batch_size: int, min_total_s: float
) -> tuple[float, int]:
    """(stays trained per second, stays per round) of one hospital's local round on ``device``.

    One untimed round first (CUDA context, kernels, allocator warm-up), then whole rounds
    until ``min_total_s``; stays counted are rows times local epochs.
    """
    training = TrainingConfig.model_validate(
        {**config.training.model_dump(), "device": device, "batch_size": batch_size}
    )
    site = _federation.load_site(config, 0)
    model = _federation.new_model(config)
    trainer = TabularTrainer(model, training, torch.device(device))
    stays = site.train.num_examples * trainer.local_epochs(site.train.num_examples)
    trainer.train(site, 1, derive_seed(config.seed, site.site_id, 1))
    rounds, spent = 0, 0.0
    while spent < min_total_s:
        started = time.perf_counter()
        trainer.train(site, rounds + 2, derive_seed(config.seed, site.site_id, rounds + 2))
        if device == "cuda":
            torch.cuda.synchronize()
        spent += time.perf_counter() - started
        rounds += 1
    return rounds * stays / spent, stays


def main(quick: bool) -> None:
    """Entry point for ``python -m bench``."""
    console = Console() if sys.stdout.isatty() else Console(width=160)
    if not torch.cuda.is_available():
        console.print("gpu_throughput: no GPU on this machine; nothing measured")
        return
    stays = QUICK_STAYS if quick else FULL_STAYS
    # One hospital of ~``stays`` rows: a mean that the log-normal sizes keep near it.
    config = _federation.benchmark_config(hospitals=2, rounds=1, mean_stays=stays)
    table = Table(
        title=f"Client training throughput, {torch.cuda.get_device_name(0)} vs CPU",
        title_justify="left",
    )
    for header in ("batch", "stays/round", "cpu stays/s", "cuda stays/s", "cuda / cpu"):
        table.add_column(header, justify="right")
    for batch_size in BATCH_SIZES:
        cpu, per_round = stays_per_second(config, "cpu", batch_size, MIN_TOTAL_S)
        cuda, _ = stays_per_second(config, "cuda", batch_size, MIN_TOTAL_S)
        table.add_row(
            str(batch_size), f"{per_round:,}", f"{cpu:,.0f}", f"{cuda:,.0f}", f"{cuda / cpu:.2f}"
        )
    table.caption = (
        f"fedsilo's TabularTrainer.train, TabularMLP{config.training.hidden_sizes}, "
        f"{config.training.optimizer}; mean over whole rounds for {MIN_TOTAL_S:.0f} s after one "
        f"warm-up round; CPU with torch's {torch.get_num_threads()} threads."
    )
    console.print(table)
