"""fedsilo's default app with a trainer that records the CPU it spends training and evaluating.

The scale benchmark splits a federation's cost into the training compute (inside
``ClientTrainer.train`` / ``evaluate``) and everything else. It runs the federation as the
user does (``fedsilo simulate --app bench/_timed_app.py:app``), so the measurement has to come
back from the hospital processes: each appends one line per call to its own file in the folder
named by ``FEDSILO_BENCH_TIMINGS``. CPU time (``time.process_time``), not wall time, so that
other load on the machine does not count as training.

The coordinating side's start-up is recorded too, when the aggregator is built (just before
round 1, after the imports, the run's set-up and the feature moments): the aggregator
process's CPU so far, and the process engine's fork server's (its whole life is start-up:
importing what the hospital workers start with, then forking them). The scale benchmark
counts both as start-up, so that its per-round overhead is the rounds' alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from fedsilo.engine.app import FederatedApp, default_aggregator
from fl_client.tabular import TabularTrainer
from fl_client.trainer import ClientTrainer, TrainResult
from fl_core.config import FederationConfig, TrainingConfig
from fl_core.data.base import SiteData, Split
from fl_core.errors import ConfigError
from fl_core.exchange.manifests import EvaluationReport
from fl_server.aggregator import ServerAggregator

TIMINGS_ENV = "FEDSILO_BENCH_TIMINGS"


class TimedTrainer(TabularTrainer):
    """``TabularTrainer`` plus one ``kind<TAB>cpu_seconds`` line per train/evaluate call.

    The first line of each process is ``startup``: the CPU it spent before its first call
    (interpreter, imports, loading its hospitals' data); ``total`` lines carry the process's
    CPU so far, so the last one bounds what the process spent up to its final answer.
    """

    def __init__(
        self, model: nn.Module, config: TrainingConfig, device: torch.device, folder: Path
    ) -> None:
        super().__init__(model, config, device)
        self._path = folder / f"{os.uname().nodename}-{os.getpid()}.tsv"
        self._handle: TextIO | None = None

    def _record(self, kind: str, seconds: float) -> None:
        # one open file per process, flushed per call: opening and closing it per call cost
        # more CPU than the federation's own exchange writes and was counted as its overhead
        if self._handle is None:
            self._handle = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
            self._handle.write(f"startup\t{time.process_time() - seconds:.6f}\n")
        self._handle.write(f"{kind}\t{seconds:.6f}\ntotal\t{time.process_time():.6f}\n")
        self._handle.flush()

    def train(self, data: SiteData, round_index: int, seed: int) -> TrainResult:
        started = time.process_time()
        result = super().train(data, round_index, seed)
        self._record("train", time.process_time() - started)
        return result

    def evaluate(self, split: Split, num_bins: int) -> EvaluationReport:
        started = time.process_time()
        report = super().evaluate(split, num_bins)
        self._record("evaluate", time.process_time() - started)
        return report


def timed_trainer(
    model: nn.Module, config: FederationConfig, device: torch.device
) -> ClientTrainer:
    folder = os.environ.get(TIMINGS_ENV)
    if not folder:
        raise ConfigError(f"set {TIMINGS_ENV} to a folder for the per-process timing files")
    return TimedTrainer(model, config.training, device, Path(folder))


COORDINATOR_SUFFIX = ".coordinator"
"""The coordinating side's start-up lines (not a hospital process's ``.tsv``)."""


def _fork_server_cpu_s() -> float:
    """CPU of this process's multiprocessing fork server so far (0 when it has none)."""
    from multiprocessing import forkserver

    import psutil

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def timed_aggregator(config: FederationConfig) -> ServerAggregator:
    """The config's aggregator, after writing the coordinating side's start-up CPU."""
    folder = os.environ.get(TIMINGS_ENV)
    if folder:
        path = Path(folder) / f"{os.uname().nodename}-{os.getpid()}{COORDINATOR_SUFFIX}"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"aggregator\t{time.process_time():.6f}\n")
            handle.write(f"fork_server\t{_fork_server_cpu_s():.6f}\n")
    return default_aggregator(config)


app = FederatedApp(trainer=timed_trainer, aggregator=timed_aggregator)


@dataclass(frozen=True)
class Timings:
    """Sums over every hospital process of one run."""

    train_s: float
    evaluate_s: float
    startup_s: float
    hospital_processes_s: float
    """CPU of the hospital processes up to their last answer (start-up and polling included)."""
    processes: int
    calls: int
    compute_per_process_s: tuple[float, ...] = ()
    """Train + evaluate CPU of each hospital process: how evenly the work was placed."""
    coordinator_startup_s: float = 0.0
    """The aggregator process's CPU before round 1, plus its fork server's (0 if unrecorded)."""

    @property
    def compute_s(self) -> float:
        return self.train_s + self.evaluate_s


def read_timings(folder: Path) -> Timings:
    sums = {"train": 0.0, "evaluate": 0.0, "startup": 0.0}
    calls = 0
    processes_s = 0.0
    per_process = []
    files = sorted(folder.glob("*.tsv"))
    for path in files:
        last_total = 0.0
        compute = 0.0
        for line in path.read_text(encoding="utf-8").splitlines():
            kind, seconds = line.split("\t")
            if kind == "total":
                last_total = float(seconds)
                continue
            sums[kind] += float(seconds)
            calls += kind != "startup"
            compute += float(seconds) if kind != "startup" else 0.0
        processes_s += last_total
        per_process.append(compute)
    coordinator = sum(
        float(line.split("\t")[1])
        for path in folder.glob(f"*{COORDINATOR_SUFFIX}")
        for line in path.read_text(encoding="utf-8").splitlines()
    )
    return Timings(
        sums["train"],
        sums["evaluate"],
        sums["startup"],
        processes_s,
        len(files),
        calls,
        tuple(sorted(per_process)),
        coordinator,
    )
