"""GPU THROUGHPUT: client training stays per second on CUDA next to CPU.

Why: hospitals train on a GPU when their task has one (docs/design.md, a round, step 2), and the
default model is a small MLP, for which a GPU may not pay off at the default batch size.
This measures fedsilo's own ``TabularTrainer.train`` (the code a hospital runs) on one large
synthetic hospital, on ``cpu`` (the baseline) and on ``cuda``, at the default batch size and a
large one. For each batch size the two devices run interleaved, ``REPEATS`` times each; a run
is whole local rounds for at least ``MIN_TOTAL_S`` after one untimed warm-up round.

It needs a GPU: on a machine without one it prints "no GPU on this machine" and measures
nothing (run it where one is lent: ``python -m bench --only gpu_throughput``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import count

import torch

from bench import _federation, _tables, _timing
from fl_client.tabular import TabularTrainer
from fl_client.trainer import derive_seed
from fl_core.config import FederationConfig, TrainingConfig

FULL_STAYS = 50_000
QUICK_STAYS = 5_000
BATCH_SIZES = (128, 1024)
MIN_TOTAL_S = 2.0
QUICK_MIN_TOTAL_S = 0.5
REPEATS = _timing.MIN_REPEATS
BASELINE = "cpu"


def round_timer(
    config: FederationConfig, device: str, batch_size: int, min_total_s: float
) -> tuple[Callable[[], float], int]:
    """(a contender returning seconds per local round on ``device``, stays per round).

    The trainer is built and warmed up here (one untimed round: CUDA context, kernels,
    allocator); each call of the contender then trains whole rounds until ``min_total_s``
    and returns the mean seconds of one. Stays per round are rows times local epochs.
    """
    training = TrainingConfig.model_validate(
        {**config.training.model_dump(), "device": device, "batch_size": batch_size}
    )
    site = _federation.load_site(config, 0)
    model = _federation.new_model(config)
    trainer = TabularTrainer(model, training, torch.device(device))
    stays = site.train.num_examples * trainer.local_epochs(site.train.num_examples)
    rounds = count(1)

    def train_round() -> None:
        round_index = next(rounds)
        trainer.train(site, round_index, derive_seed(config.seed, site.site_id, round_index))
        if device == "cuda":
            torch.cuda.synchronize()

    train_round()

    def seconds_per_round() -> float:
        done, spent = 0, 0.0
        while spent < min_total_s:
            spent += _timing.timed(train_round)()
            done += 1
        return spent / done

    return seconds_per_round, stays


def measure_batch(
    config: FederationConfig,
    devices: Sequence[str],
    batch_size: int,
    repeats: int,
    min_total_s: float,
) -> tuple[dict[str, list[float]], int]:
    """Seconds per round of every device's runs (interleaved), and stays per round."""
    timers = {device: round_timer(config, device, batch_size, min_total_s) for device in devices}
    stays = {per_round for _, per_round in timers.values()}
    if len(stays) != 1:
        raise RuntimeError(f"devices trained different stays per round: {sorted(stays)}")
    runs = _timing.interleave({device: timer for device, (timer, _) in timers.items()}, repeats)
    return runs, stays.pop()


def main(quick: bool) -> None:
    """Entry point for ``python -m bench``."""
    console = _timing.table_console()
    if not torch.cuda.is_available():
        console.print("gpu_throughput: no GPU on this machine; nothing measured")
        return
    stays = QUICK_STAYS if quick else FULL_STAYS
    min_total_s = QUICK_MIN_TOTAL_S if quick else MIN_TOTAL_S
    # One hospital of ~``stays`` rows: a mean that the log-normal sizes keep near it.
    config = _federation.benchmark_config(hospitals=2, rounds=1, mean_stays=stays)
    table = _timing.new_table(
        f"Client training, {torch.cuda.get_device_name(0)} vs CPU; baseline: {BASELINE} at "
        "the same batch size"
    )
    for header in ("batch", "device", "stays/round", "s/round min", "s/round median",
                   f"x {BASELINE}", "stays/s (median)"):  # fmt: skip
        table.add_column(header, justify="right")
    for batch_size in BATCH_SIZES:
        runs, per_round = measure_batch(
            config, (BASELINE, "cuda"), batch_size, REPEATS, min_total_s
        )
        for device, seconds in runs.items():
            median = _timing.Spread.of(seconds).median
            table.add_row(
                str(batch_size),
                device,
                f"{per_round:,}",
                *_timing.spread_cells(seconds, runs[BASELINE], ".4f"),
                f"{per_round / median:,.0f}",
            )
        table.add_section()
    table.caption = "\n".join(
        [
            _timing.method_note(
                REPEATS,
                BASELINE,
                f"fedsilo's TabularTrainer.train, TabularMLP{config.training.hidden_sizes}, "
                f"{config.training.optimizer}; a run: mean seconds of whole local rounds for "
                f"{min_total_s:g} s after one warm-up round; CPU with torch's "
                f"{torch.get_num_threads()} threads",
            ),
            _timing.load_note(),
        ]
    )
    console.print(table)
    _tables.write_tables("gpu_throughput", [table])
