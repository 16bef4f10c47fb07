"""The scale figure: the eICU-size twin on ``WORKERS`` cores, process and MPI engines.

``python -m bench --only scale_bench`` (``--quick``: the ``QUICK_*`` twin and rounds).
- Data: the twin at eICU's size (``HOSPITALS`` x ``STAYS`` unit stays), written as the four
  eICU tables and read by the real reader (``fedsilo data synth`` + ``data prepare``; cached
  between runs, its one-off build time is printed, not counted).
- Each engine runs as the user runs it, ``fedsilo simulate --engine E --workers 2`` in a fresh
  process (admission on, as in production), with the default app's trainer wrapped to record
  the CPU spent in ``ClientTrainer.train`` / ``evaluate`` (``bench/_timed_app.py``). The
  engines run interleaved, ``REPEATS`` times each; the process engine is the baseline.
- Training compute = that CPU, summed over hospital processes. Federation overhead = every
  other CPU second of the run's processes (aggregator, hospital processes, mpirun): exchange
  reads and writes, sha256 and admission checks, aggregation, polling, serialisation, process
  start-up (interpreters, torch import, loading data). Shown as a share of the training
  compute (target: below ``TARGET_SHARE``), and again without any process's start-up (the
  hospital processes' before their first call, the aggregator's before round 1, the fork
  server's: a one-off cost that 20 rounds do not amortise). CPU, not wall, so
  that other load on a shared machine does not pass for overhead; the wall-clock share
  (``WORKERS`` cores x rounds wall minus compute) is printed beside it for the same runs.
- Before the runs, the CPU a hospital worker spends reading one hospital's three splits, the
  prepared files as written (the feature matrix one column) against a copy with a column per
  feature (the layout before), interleaved.
No thresholds: numbers only.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from bench import _tables, _timing
from bench._timed_app import TIMINGS_ENV, Timings, read_timings
from fedsilo.engine.federation import open_exchange
from fedsilo.engine.metrics_row import read_metrics
from fedsilo.engine.mpi_launch import rank_environment
from fl_core.config import FederationConfig, TwinDataConfig
from fl_core.data.eicu.twin_source import materialise_twin
from fl_core.data.prepared import PreparedFolderSource, named_feature_columns, read_schema
from fl_core.exchange.fs_store import LocalDirectoryStore

HOSPITALS = 208
STAYS = 200_000
ROUNDS = 20
QUICK_HOSPITALS = 40
QUICK_STAYS = 20_000
QUICK_ROUNDS = 5
WORKERS = 2
REPEATS = _timing.MIN_REPEATS
BASELINE = "process"
TARGET_SHARE = 0.10
"""The goal: the federation's overhead at 208 hospitals within 10 % of training compute."""
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
    def startup_s(self) -> float:
        """Every process's start-up: the hospital processes' before their first call, the
        aggregator's before round 1 and the fork server's (``bench/_timed_app.py``)."""
        return self.timings.startup_s + self.timings.coordinator_startup_s

    @property
    def aggregator_s(self) -> float:
        """Everything else after start-up: the aggregator's rounds, mpirun, the launcher."""
        return self.cpu_s - self.timings.hospital_processes_s - self.timings.coordinator_startup_s

    @property
    def overhead_share(self) -> float:
        return self.overhead_cpu_s / self.timings.compute_s

    @property
    def rounds_overhead_share(self) -> float:
        """Overhead without any process's start-up (imports, data loading, round 0)."""
        return (self.overhead_cpu_s - self.startup_s) / self.timings.compute_s

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
    rows = read_metrics(run_dir / "metrics.jsonl")
    return rows[-1].auroc if rows else None


def put_cost_us(work: Path, objects: int = 400) -> float:
    """CPU microseconds per write-once object on this filesystem, measured beside each run.

    Every answer is one such object (a training answer's manifest is inside its tensors
    file). On shared VMs the CPU cost of creating a file moves a lot from one minute to the
    next, and the federation's overhead moves with it; the table shows what it was.
    """
    store = LocalDirectoryStore(work / "put-probe", durable=False)
    payload = bytes(40_000)  # about one update of the default model
    started = time.process_time()
    for index in range(objects):
        store.put_new(f"probe/{index // 100}/{index}.bin", payload)
    spent = time.process_time() - started
    shutil.rmtree(work / "put-probe")
    return spent / objects * 1e6


def per_feature_copy(prepared: Path, target: Path) -> Path:
    """``prepared`` with every split rewritten in layout 1 (a float32 column per feature),
    the layout the prepared files had before the feature matrix became one column."""
    shutil.copytree(prepared, target)
    names = [feature.name for feature in read_schema(target).features]
    for path in sorted(target.glob("*/*.parquet")):
        pq.write_table(
            named_feature_columns(pq.read_table(path), names, path),
            path,
            compression="snappy",
            use_dictionary=False,
        )
    return target


def split_read_ms(prepared: Path, work: Path, repeats: int) -> dict[str, float]:
    """CPU ms to read one hospital's three splits, per layout (median of ``repeats``
    interleaved passes over every hospital): what each hospital worker pays at start-up."""
    folders = {"one column": prepared, "a column per feature": per_feature_copy(prepared, work)}
    sources = {name: PreparedFolderSource(folder) for name, folder in folders.items()}
    sites = sources["one column"].site_ids()

    def read_all(source: PreparedFolderSource) -> Callable[[], float]:
        def run() -> float:
            started = time.process_time()
            for site in sites:
                source.load_site(site)
            return (time.process_time() - started) / len(sites) * 1e3

        return run

    found = _timing.interleave({name: read_all(s) for name, s in sources.items()}, repeats)
    shutil.rmtree(work)
    return {name: statistics.median(values) for name, values in found.items()}


def run_engine(
    engine: str, prepared: Path, rounds: int, work: Path, run_id: str | None = None
) -> EngineRun:
    """``fedsilo simulate --engine ENGINE`` in a fresh process, timed and CPU-accounted."""
    run_id = run_id or engine
    timings = work / f"timings-{run_id}"
    timings.mkdir(parents=True)
    environment = rank_environment()
    environment[TIMINGS_ENV] = str(timings)
    command = [sys.executable, "-m", "fedsilo.cli", "simulate", "--engine", engine]
    command += ["--data", str(prepared), "--rounds", str(rounds), "--workers", str(WORKERS)]
    command += ["--app", APP_REF, "--out", str(work), "--run-id", run_id]
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
    run_dir = work / run_id
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


def _median(runs: list[EngineRun], figure: Callable[[EngineRun], float]) -> float:
    return _timing.Spread.of([figure(run) for run in runs]).median


def _row(engine: str, runs: list[EngineRun], baseline: list[EngineRun]) -> list[str]:
    aurocs = {run.final_auroc for run in runs}
    auroc = runs[-1].final_auroc
    return [
        engine,
        *_timing.spread_cells(
            [run.wall_s for run in runs], [run.wall_s for run in baseline], ".1f"
        ),
        f"{_median(runs, lambda r: r.rounds_wall_s):.1f}",
        f"{_median(runs, lambda r: r.timings.train_s):.1f} + "
        f"{_median(runs, lambda r: r.timings.evaluate_s):.1f}",
        f"{_median(runs, lambda r: r.startup_s):.1f} / "
        f"{_median(runs, lambda r: r.hospital_rounds_overhead_s):.1f} / "
        f"{_median(runs, lambda r: r.aggregator_s):.1f}",
        f"{_median(runs, lambda r: r.overhead_share):.1%}",
        f"{_median(runs, lambda r: r.rounds_overhead_share):.1%}",
        f"{_median(runs, lambda r: r.wall_share):.1%}",
        "-" if auroc is None else f"{auroc:.3f}" + ("" if len(aurocs) == 1 else " (varies)"),
        f"{_median(runs, lambda r: r.put_us):.0f}",
    ]


def run_engines(
    engines: list[str], prepared: Path, rounds: int, work: Path, repeats: int
) -> dict[str, list[EngineRun]]:
    """Every engine ``repeats`` times, interleaved, each run in its own folder under ``work``."""
    count = iter(range(len(engines) * repeats))

    def contender(engine: str) -> Callable[[], EngineRun]:
        return lambda: run_engine(engine, prepared, rounds, work, f"{engine}-{next(count)}")

    return _timing.interleave({engine: contender(engine) for engine in engines}, repeats)


def main(quick: bool) -> None:
    hospitals = QUICK_HOSPITALS if quick else HOSPITALS
    stays = QUICK_STAYS if quick else STAYS
    rounds = QUICK_ROUNDS if quick else ROUNDS
    console = _timing.table_console()
    started = time.perf_counter()
    prepared = materialise_twin(TwinDataConfig(hospitals=hospitals, stays=stays), 0)
    sites = len(PreparedFolderSource(prepared).site_ids())
    console.print(
        f"twin {hospitals} x {stays:,} stays: {sites} hospitals prepared in {prepared} "
        f"({time.perf_counter() - started:.1f} s, cached after the first build)"
    )
    with tempfile.TemporaryDirectory(prefix="fedsilo-layouts-") as scratch:
        reads = split_read_ms(prepared, Path(scratch) / "per-feature", 2 * REPEATS + 1)
    console.print(
        "reading a hospital's three splits (CPU ms, median of "
        f"{2 * REPEATS + 1} interleaved passes over {sites} hospitals): "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in reads.items())
    )
    _become_subreaper()
    engines = [BASELINE] + (["mpi"] if shutil.which("mpirun") else [])
    with tempfile.TemporaryDirectory(prefix="fedsilo-scale-") as scratch:
        runs = run_engines(engines, prepared, rounds, Path(scratch), REPEATS)
    table = _timing.new_table(
        f"{sites} hospitals, {stays:,} stays, {rounds} rounds, {WORKERS} hospital "
        f"workers (target: overhead < {TARGET_SHARE:.0%} of compute); baseline: "
        f"{BASELINE} engine"
    )
    for column in (
        "engine",
        "wall s min",
        "wall s median",
        f"x {BASELINE}",
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
    for engine, found in runs.items():
        table.add_row(*_row(engine, found, runs[BASELINE]))
    table.caption = "\n".join(
        [
            _timing.method_note(
                REPEATS,
                BASELINE,
                "wall: the whole `fedsilo simulate` process from outside, "
                f"{WORKERS} hospital workers",
            ),
            "Columns after 'x process' are medians over the same runs, each figure on its own "
            "(CPU seconds of the run's processes; shares of the training compute).",
            _timing.load_note(),
        ]
    )
    console.print(table)
    console.print(f"table written as JSON to {_tables.write_tables('scale_bench', [table])}")
    for engine, found in runs.items():
        last = found[-1]
        per_worker = " / ".join(f"{s:.1f}" for s in last.timings.compute_per_process_s)
        console.print(
            f"{engine}: {last.objects_written:,} exchange files written a run; at the probe's "
            f"{last.put_us:.0f} us each that is about {last.puts_share:.1%} of compute (last "
            f"run). Train + eval CPU s per hospital process, last run: {per_worker}"
        )
    if "mpi" not in engines:
        console.print("MPI engine not measured: mpirun not found (make install)")


if __name__ == "__main__":
    main("--quick" in sys.argv)
