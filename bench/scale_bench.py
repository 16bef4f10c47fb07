"""Issue 8's scale figure: the eICU-size twin on 2 cores, process engine and MPI engine.

``python -m bench --only scale_bench`` (``--quick``: 40 hospitals x 20,000 stays, 5 rounds).
- Data: the twin, 208 hospitals x 200,000 unit stays, written as the four eICU tables and read
  by the real reader (``fedsilo data synth`` + ``data prepare``; cached between runs, its
  one-off build time is printed, not counted).
- Each engine runs as the user runs it, ``fedsilo simulate --engine E --workers 2`` in a fresh
  process, with the default app's trainer wrapped to record the CPU spent in
  ``ClientTrainer.train`` / ``evaluate`` (``bench/_timed_app.py``).
- Training compute = that CPU, summed over hospital processes. Federation overhead = every
  other CPU second of the run's processes (aggregator, hospital processes, mpirun): exchange
  reads and writes, sha256 and admission checks, aggregation, polling, serialisation, process
  start-up (interpreters, torch import, loading data). Shown as a share of the training
  compute (target < 20 %), with start-up also split out. CPU, not wall, so that other load on a
  shared machine does not pass for overhead; the wall-clock share (2 cores x rounds wall minus
  compute) is printed beside it for the same run.
No thresholds: numbers only.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench._timed_app import TIMINGS_ENV, Timings, read_timings
from fedsilo.engine.federation import open_exchange
from fedsilo.engine.mpi_launch import rank_environment
from fl_core.config import FederationConfig, TwinDataConfig
from fl_core.data.eicu.twin_source import materialize_twin
from fl_core.data.prepared import PreparedFolderSource
from fl_core.exchange.fs_store import LocalDirectoryStore

HOSPITALS = 208
STAYS = 200_000
ROUNDS = 20
QUICK_HOSPITALS = 40
QUICK_STAYS = 20_000
QUICK_ROUNDS = 5
WORKERS = 2
TARGET_SHARE = 0.20
_PR_SET_CHILD_SUBREAPER = 36
APP_REF = str(Path(__file__).with_name("_timed_app.py")) + ":app"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class EngineRun:
    engine: str
    wall_s: float
    rounds_wall_s: float
    cpu_s: float
    timings: Timings
    final_auroc: float | None
    put_us: float
    """CPU per write-once 40 kB object in the same folder, before and after the run."""
    objects_written: int

    @property
    def puts_share(self) -> float:
        """Estimated share of compute spent creating the exchange's files, at the probe's cost."""
        return self.objects_written * self.put_us / 1e6 / self.timings.compute_s

    @property
    def overhead_cpu_s(self) -> float:
        return self.cpu_s - self.timings.compute_s

    @property
    def hospital_rounds_overhead_s(self) -> float:
        """Hospital processes' CPU outside train/evaluate after start-up (exchange, polling)."""
        t = self.timings
        return t.hospital_processes_s - t.startup_s - t.compute_s

    @property
    def aggregator_s(self) -> float:
        """Everything else: aggregator, launcher, forkserver or mpirun, for the whole run."""
        return self.cpu_s - self.timings.hospital_processes_s

    @property
    def overhead_share(self) -> float:
        return self.overhead_cpu_s / self.timings.compute_s

    @property
    def rounds_overhead_share(self) -> float:
        """Overhead without the hospital processes' start-up (imports, data loading)."""
        return (self.overhead_cpu_s - self.timings.startup_s) / self.timings.compute_s

    @property
    def wall_share(self) -> float:
        """Idle or non-training core time during the rounds, on ``WORKERS`` cores."""
        capacity = self.rounds_wall_s * WORKERS
        return (capacity - self.timings.compute_s) / self.timings.compute_s


def _become_subreaper() -> None:
    """Adopt orphaned descendants so that their CPU reaches ``RUSAGE_CHILDREN``.

    The process engine's forkserver outlives the command's own wait, and the hospital workers
    are its children; without this their CPU would never be counted.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _reap_adopted(timeout_s: int = 60) -> None:
    """Wait for every adopted descendant, so their CPU is in ``RUSAGE_CHILDREN``.

    A blocking ``waitpid`` per descendant, bounded by an alarm so that a descendant that
    never exits fails the benchmark instead of hanging it.
    """

    def give_up(signum: int, frame: object) -> None:
        raise RuntimeError(f"descendants of the benchmarked run did not exit in {timeout_s} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(timeout_s)
    try:
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        return  # none left
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rounds_wall_s(run_dir: Path, rounds: int) -> float:
    """Round 1 opened to the final evaluation round closed, from the exchange's results."""
    config = FederationConfig.model_validate_json((run_dir / "config.json").read_text())
    exchange = open_exchange((run_dir / "exchange").resolve().as_uri(), config)
    first = exchange.read_result(1)
    last = exchange.read_result(rounds + 1)
    if first is None or last is None:
        raise RuntimeError(f"{run_dir}: the run has no results for rounds 1 and {rounds + 1}")
    return last.closed_unix - first.started_unix


def _final_auroc(run_dir: Path) -> float | None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["auroc"] if rows else None


def put_cost_us(work: Path, objects: int = 400) -> float:
    """CPU microseconds per write-once object on this filesystem, measured beside each run.

    Every answer is one such object (a training answer's manifest is inside its tensors
    file). On the VMs these figures come from, creating a file costs anywhere from 50 to
    800 us of CPU from one minute to the next, so the federation's overhead moves with it;
    the table shows what it was.
    """
    store = LocalDirectoryStore(work / "put-probe", durable=False)
    payload = bytes(40_000)  # about one update of the default model
    started = time.process_time()
    for index in range(objects):
        store.put_new(f"probe/{index // 100}/{index}.bin", payload)
    spent = time.process_time() - started
    shutil.rmtree(work / "put-probe")
    return spent / objects * 1e6


def run_engine(engine: str, prepared: Path, rounds: int, work: Path) -> EngineRun:
    """``fedsilo simulate --engine ENGINE`` in a fresh process, timed and CPU-accounted."""
    timings = work / f"timings-{engine}"
    timings.mkdir(parents=True)
    environment = rank_environment()
    environment[TIMINGS_ENV] = str(timings)
    command = [sys.executable, "-m", "fedsilo.cli", "simulate", "--engine", engine]
    command += ["--data", str(prepared), "--rounds", str(rounds), "--workers", str(WORKERS)]
    command += ["--app", APP_REF, "--out", str(work), "--run-id", engine]
    command += ["--log-level", "ERROR"]
    put_us = put_cost_us(work)
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    _reap_adopted()
    if done.returncode != 0:
        raise RuntimeError(f"{engine} engine failed ({done.returncode}): {done.stderr[-2000:]}")
    run_dir = work / engine
    return EngineRun(
        engine=engine,
        wall_s=wall,
        rounds_wall_s=_rounds_wall_s(run_dir, rounds),
        cpu_s=_children_cpu_s() - cpu_before,
        timings=read_timings(timings),
        final_auroc=_final_auroc(run_dir),
        put_us=(put_us + put_cost_us(work)) / 2,
        objects_written=sum(1 for p in (run_dir / "exchange").rglob("*") if p.is_file()),
    )


def _row(run: EngineRun) -> list[str]:
    t = run.timings
    return [
        run.engine,
        f"{run.wall_s:.1f}",
        f"{run.rounds_wall_s:.1f}",
        f"{t.train_s:.1f} + {t.evaluate_s:.1f}",
        f"{t.startup_s:.1f} / {run.hospital_rounds_overhead_s:.1f} / {run.aggregator_s:.1f}",
        f"{run.overhead_share:.1%}",
        f"{run.rounds_overhead_share:.1%}",
        f"{run.wall_share:.1%}",
        "-" if run.final_auroc is None else f"{run.final_auroc:.3f}",
        f"{run.put_us:.0f}",
    ]


def main(quick: bool) -> None:
    hospitals = QUICK_HOSPITALS if quick else HOSPITALS
    stays = QUICK_STAYS if quick else STAYS
    rounds = QUICK_ROUNDS if quick else ROUNDS
    console = Console() if sys.stdout.isatty() else Console(width=160)
    started = time.perf_counter()
    prepared = materialize_twin(TwinDataConfig(hospitals=hospitals, stays=stays), 0)
    sites = len(PreparedFolderSource(prepared).site_ids())
    console.print(
        f"twin {hospitals} x {stays:,} stays: {sites} hospitals prepared in {prepared} "
        f"({time.perf_counter() - started:.1f} s, cached after the first build)"
    )
    _become_subreaper()
    engines = ["process"] + (["mpi"] if shutil.which("mpirun") else [])
    with tempfile.TemporaryDirectory(prefix="fedsilo-scale-") as scratch:
        runs = [run_engine(engine, prepared, rounds, Path(scratch)) for engine in engines]
    table = Table(
        title=f"{sites} hospitals, {stays:,} stays, {rounds} rounds, {WORKERS} hospital "
        f"workers on {os.cpu_count()} cores (target: overhead < {TARGET_SHARE:.0%} of compute)"
    )
    for column in (
        "engine",
        "wall s",
        "rounds wall s",
        "train + eval CPU s",
        "overhead CPU s: start-up / hospitals / rest",
        "overhead / compute",
        "same, w/o start-up",
        "wall-clock share",
        "final AUROC",
        "file put CPU us",
    ):
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(*_row(run))
    console.print(table)
    for run in runs:
        per_worker = " / ".join(f"{s:.1f}" for s in run.timings.compute_per_process_s)
        console.print(
            f"{run.engine}: {run.objects_written:,} exchange files written; at the probe's "
            f"{run.put_us:.0f} us each that is about {run.puts_share:.1%} of compute. "
            f"Train + eval CPU s per hospital process: {per_worker}"
        )
    if "mpi" not in engines:
        console.print("MPI engine not measured: mpirun not found (make install)")


if __name__ == "__main__":
    main("--quick" in sys.argv)
