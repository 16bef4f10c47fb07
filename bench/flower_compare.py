"""fedsilo side by side with Flower, and both against a plain PyTorch loop (issue 8).

Why: "is the framework's overhead worth it" needs a peer and a floor measured in the same run
on the same machine, never figures copied from elsewhere. Two tables:

- Aggregation: fedsilo's streaming FedAvg (from safetensors update files, as the aggregator
  reads them, and from updates already in memory) against Flower's
  ``flwr.server.strategy.aggregate.aggregate`` on the same N x P float32 update files. Each
  measurement runs in a fresh process, so its peak RSS is its own. Ratios are fedsilo/Flower.
- Whole federation: the same hospitals, model, local training and rounds
  (``bench/_federation.py``) run by ``fedsilo simulate``, by Flower's simulation engine
  (``run_simulation`` with a ``ClientApp``/``ServerApp``) and by ``bench/plain_loop.py``; wall
  time as a whole process and inside it, steady round time and final pooled-test AUROC
  (scikit-learn, on each run's final model), with ratios to the plain loop.

Flower lives in its own environment (``bench/.venv-flower``, from
``bench/requirements-flower.lock``), created on first use, so it cannot disturb the pinned
project environment; its code runs there as subprocesses. When it cannot be created the
Flower rows say "not measured" and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import safetensors.numpy
from rich.console import Console
from rich.table import Table

from bench.aggregation import (
    FEDERATION_ID,
    ROUND_INDEX,
    UpdateSet,
    _best_of,
    _in_fresh_process,
    _label,
    read_updates,
    stream_fedsilo,
    tensor_specs,
    write_updates,
)
from fl_core.aggregation import StreamingWeightedMean
from fl_core.config import FederationConfig
from fl_core.exchange.layout import ExchangeLayout
from fl_core.types import Weights
from fl_server.allocator import keep_freed_buffers

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWER_LOCK = REPO_ROOT / "bench" / "requirements-flower.lock"
FLOWER_VENV = Path(os.environ.get("FEDSILO_FLOWER_VENV", REPO_ROOT / "bench" / ".venv-flower"))
"""Where the Flower environment lives (``FEDSILO_FLOWER_VENV`` moves it, e.g. to a cache)."""
STAMP_NAME = ".fedsilo-lock-sha256"
INSTALL_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 1200
FULL_NUM_UPDATES = (10, 50)
FULL_NUM_PARAMS = (1_000_000, 10_000_000)
QUICK_NUM_UPDATES = (5, 10)
QUICK_NUM_PARAMS = (200_000,)
FULL_FEDERATION = (20, 10, 1500)
"""(hospitals, rounds, mean stays): the issue's 20 hospitals, 10 rounds, ``make run``'s data."""
QUICK_FEDERATION = (6, 3, 300)
TARGET_VS_PLAIN = 1.3
"""The issue's target: fedsilo as a whole process within 1.3x of the plain loop."""
NOT_MEASURED = "not measured"


# ---- the Flower environment -----------------------------------------------------------------


@dataclass(frozen=True)
class FlowerEnv:
    """The Flower interpreter, or why there is none (``python`` is None then)."""

    python: Path | None
    reason: str = ""


def _lock_digest() -> str:
    return hashlib.sha256(FLOWER_LOCK.read_bytes()).hexdigest()


def flower_env(create: bool = True, log: Callable[[str], None] = lambda _: None) -> FlowerEnv:
    """The Flower environment, created from the lock when missing or out of date.

    A stamp holding the lock's sha256 marks a finished install, so a half-built environment
    (interrupted pip) is rebuilt rather than used.
    """
    python = FLOWER_VENV / "bin" / "python"
    stamp = FLOWER_VENV / STAMP_NAME
    if python.exists() and stamp.exists() and stamp.read_text().strip() == _lock_digest():
        return FlowerEnv(python)
    if not create:
        return FlowerEnv(None, f"no Flower environment at {FLOWER_VENV} (make bench creates it)")
    log(f"creating the Flower environment {FLOWER_VENV} from {FLOWER_LOCK.name} (once)")
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", "--clear", str(FLOWER_VENV)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
         str(FLOWER_LOCK)],
    ]  # fmt: skip
    for step in steps:
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return FlowerEnv(None, f"{' '.join(step[:3])} failed: {err}")
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
            last = (errors or done.stderr.strip().splitlines() or ["no output"])[-1]
            return FlowerEnv(None, f"creating the Flower environment failed: {last[:300]}")
    stamp.write_text(_lock_digest())
    return FlowerEnv(python)


def _flower_subprocess_env() -> dict[str, str]:
    """The repository on ``PYTHONPATH``: Ray workers import the client module by name."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    return env


# ---- aggregation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AggMeasurement:
    seconds: float
    start_rss_bytes: int
    peak_rss_bytes: int


def peak_rss_bytes() -> int:
    """This process's ``VmHWM``.

    Not ``ru_maxrss``: Linux carries that across ``execve`` from the parent, so a fresh child
    of a bench process that has imported torch would report at least the parent's RSS.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure_files(updates: UpdateSet, num_updates: int, min_total_s: float) -> AggMeasurement:
    """Worker body: fedsilo's aggregator path, one update file at a time (no admission)."""
    keep_freed_buffers()
    start_rss = psutil.Process().memory_info().rss
    seconds, _ = _best_of(lambda: stream_fedsilo(updates, num_updates, admit=False), min_total_s)
    return AggMeasurement(seconds, start_rss, peak_rss_bytes())


def measure_in_memory(updates: UpdateSet, num_updates: int, min_total_s: float) -> AggMeasurement:
    """Worker body: fedsilo's ``StreamingWeightedMean`` over updates already in memory.

    The same input Flower's ``aggregate`` gets, so the two times compare the arithmetic alone.
    """
    in_memory = read_updates(updates, num_updates)
    start_rss = psutil.Process().memory_info().rss

    def average() -> Weights:
        mean = StreamingWeightedMean(tensor_specs(updates.num_params))
        for weights, weight in in_memory:
            mean.add(weights, weight)
        return mean.result()

    seconds, _ = _best_of(average, min_total_s)
    return AggMeasurement(seconds, start_rss, peak_rss_bytes())


def update_paths(updates: UpdateSet, num_updates: int) -> list[str]:
    layout = ExchangeLayout(FEDERATION_ID)
    return [
        str(updates.root / layout.update_weights_key(ROUND_INDEX, site_id))
        for site_id in updates.site_ids[:num_updates]
    ]


def measure_flower_aggregate(
    env: FlowerEnv,
    updates: UpdateSet,
    num_updates: int,
    min_total_s: float,
    result_path: Path | None = None,
) -> AggMeasurement | str:
    """Flower's ``aggregate`` in a fresh Flower-environment process, or why not measured."""
    if env.python is None:
        return env.reason
    spec = {
        "paths": update_paths(updates, num_updates),
        "num_examples": list(updates.num_examples[:num_updates]),
        "min_total_s": min_total_s,
        "result": None if result_path is None else str(result_path),
    }
    script = REPO_ROOT / "bench" / "flower" / "flower_aggregate.py"
    done = subprocess.run(
        [str(env.python), str(script)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=_flower_subprocess_env(),
        check=False,
    )
    if done.returncode != 0:
        return f"Flower aggregate failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return AggMeasurement(out["seconds"], out["start_rss_bytes"], out["peak_rss_bytes"])


@dataclass(frozen=True)
class AggRow:
    cell: str
    method: str
    measured: AggMeasurement | str
    flower: AggMeasurement | str


@dataclass
class AggReport:
    rows: list[AggRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_aggregation(
    env: FlowerEnv,
    grid_num_updates: Sequence[int],
    grid_num_params: Sequence[int],
    *,
    workdir: Path | None = None,
    min_total_s: float = 1.0,
    log: Callable[[str], None] = lambda _: None,
) -> AggReport:
    """Every (N, P) cell: fedsilo from files, fedsilo in memory, Flower in memory."""
    report = AggReport()
    for num_params in grid_num_params:
        folder = Path(tempfile.mkdtemp(prefix="fedsilo-flower-agg-", dir=workdir))
        try:
            log(f"P={_label(num_params)}: writing {max(grid_num_updates)} update files")
            updates = write_updates(folder, max(grid_num_updates), num_params, seed=0)
            for num_updates in grid_num_updates:
                cell = f"N={num_updates} P={_label(num_params)}"
                log(f"{cell}: fedsilo and Flower, each in a fresh process")
                files = _in_fresh_process(measure_files, updates, num_updates, min_total_s)
                in_ram = _in_fresh_process(measure_in_memory, updates, num_updates, min_total_s)
                flower = measure_flower_aggregate(env, updates, num_updates, min_total_s)
                report.rows += [
                    AggRow(cell, "Flower aggregate, in RAM", flower, flower),
                    AggRow(cell, "fedsilo streaming, in RAM", in_ram, flower),
                    AggRow(cell, "fedsilo streaming, files", files, flower),
                ]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return report


def render_aggregation(report: AggReport, title: str) -> Table:
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("cell")
    table.add_column("method")
    for header in ("s", "x Flower time", "peak RSS MB", "growth MB", "x Flower peak"):
        table.add_column(header, justify="right")
    previous = None
    for row in report.rows:
        if previous is not None and row.cell != previous:
            table.add_section()
        previous = row.cell
        if isinstance(row.measured, str):
            table.add_row(row.cell, row.method, NOT_MEASURED, "-", "-", "-", "-")
            continue
        m, f = row.measured, row.flower
        time_ratio = "-" if isinstance(f, str) else f"{m.seconds / f.seconds:.2f}"
        peak_ratio = "-" if isinstance(f, str) else f"{m.peak_rss_bytes / f.peak_rss_bytes:.2f}"
        table.add_row(
            row.cell,
            row.method,
            f"{m.seconds:.3f}",
            time_ratio,
            f"{m.peak_rss_bytes / 1e6:,.0f}",
            f"{max(m.peak_rss_bytes - m.start_rss_bytes, 0) / 1e6:,.0f}",
            peak_ratio,
        )
    flower_reasons = {r.flower for r in report.rows if isinstance(r.flower, str)}
    table.caption = "\n".join(
        [
            "s: best of up to 5 runs. peak RSS: VmHWM of the fresh process doing it "
            "(interpreter and imports included); growth: peak minus RSS before averaging "
            "(in-RAM rows: after loading all N updates, which Flower's API needs).",
            "x Flower: fedsilo / Flower (below 1: fedsilo faster or smaller). Flower's "
            "aggregate keeps N weighted copies (N x P x 4 B more) and sums in float32; "
            "fedsilo keeps one float64 sum and one update at a time when reading files.",
            *(f"Flower not measured: {reason}" for reason in sorted(flower_reasons)),
            *report.notes,
            _load_note(),
        ]
    )
    return table


# ---- whole federation -----------------------------------------------------------------------


@dataclass(frozen=True)
class FederationRun:
    """One framework's run; ``whole_s`` from outside the process, ``inside_s`` from inside."""

    name: str
    whole_s: float | None = None
    inside_s: float | None = None
    round_s: tuple[float, ...] = ()
    final_auroc: float | None = None
    own_auroc: float | None = None
    note: str = ""

    @property
    def steady_round_s(self) -> float | None:
        """Median of rounds 2..R: round 1 carries start-up (worker imports, Ray actors)."""
        steady = self.round_s[1:] or self.round_s
        return statistics.median(steady) if steady else None


def _timed(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds of a whole process; raises with its last stderr line if it failed."""
    started = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{Path(command[0]).name} exited {done.returncode}: {tail[:300]}")
    return seconds, done.stdout


def _final_auroc(config: FederationConfig, weights_path: Path) -> float:
    """Exact pooled-test AUROC of a final model file, the same way for every framework."""
    from bench import _federation  # torch: kept out of the aggregation workers' imports

    sites = _federation.load_sites(config)
    trainer = _federation.new_trainer(config)
    weights = safetensors.numpy.load_file(str(weights_path))
    return _federation.pooled_auroc(trainer, weights, sites)


def run_plain_process(config: FederationConfig, work: Path) -> FederationRun:
    out, weights = work / "plain.json", work / "plain.safetensors"
    synthetic = config.data.synthetic
    whole, _ = _timed(
        [sys.executable, "-m", "bench.plain_loop", "--hospitals", str(synthetic.hospitals),
         "--rounds", str(config.rounds), "--mean-stays", str(synthetic.mean_stays),
         "--seed", str(config.seed), "--threads", "1", "--out", str(out),
         "--weights", str(weights)]
    )  # fmt: skip
    result = json.loads(out.read_text())
    return FederationRun(
        "plain PyTorch loop",
        whole_s=whole,
        inside_s=result["seconds"],
        round_s=tuple(result["round_seconds"]),
        final_auroc=_final_auroc(config, weights),
        own_auroc=result["round_auroc"][-1],
        note="one process, 1 torch thread",
    )


def run_fedsilo_process(config: FederationConfig, work: Path) -> FederationRun:
    config_path = work / "fedsilo.yaml"
    config_path.write_text(config.model_dump_json())  # JSON is YAML
    fedsilo_cli = Path(sys.executable).with_name("fedsilo")
    command = [str(fedsilo_cli), "simulate", "--config", str(config_path)]
    whole, _ = _timed([*command, "--out", str(work), "--run-id", "fedsilo-cli"])
    return _fedsilo_row(config, work / "fedsilo-cli", whole, None)


def run_fedsilo_inside(config: FederationConfig, work: Path) -> FederationRun:
    from fedsilo.logs import configure_logging
    from fedsilo.simulation import simulate

    configure_logging("auto", "WARNING")  # as the CLI does: no per-update lines in the table
    result = simulate(config, work, run_id="fedsilo-inside")
    return _fedsilo_row(config, result.run_dir, None, result.seconds)


def _fedsilo_row(
    config: FederationConfig, run_dir: Path, whole: float | None, inside: float | None
) -> FederationRun:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return FederationRun(
        "fedsilo simulate",
        whole_s=whole,
        inside_s=inside,
        round_s=tuple(float(row["seconds"]) for row in rows),
        final_auroc=_final_auroc(config, run_dir / "model.safetensors"),
        own_auroc=rows[-1]["auroc"],
        note=f"{config.simulation.workers or os.cpu_count()} worker processes, file exchange",
    )


def run_flower(env: FlowerEnv, config: FederationConfig, work: Path) -> FederationRun:
    name = "Flower run_simulation"
    if env.python is None:
        return FederationRun(name, note=f"{NOT_MEASURED}: {env.reason}")
    config_path, out, weights = work / "flower.json", work / "flower-result.json", work / "f.st"
    config_path.write_text(config.model_dump_json())
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    script = REPO_ROOT / "bench" / "flower" / "flower_sim.py"
    try:
        whole, _ = _timed(
            [str(env.python), str(script), "--config", str(config_path), "--out", str(out),
             "--weights", str(weights), "--cpus", str(cpus)],
            env=_flower_subprocess_env(),
        )  # fmt: skip
    except RuntimeError as err:
        return FederationRun(name, note=f"{NOT_MEASURED}: {err}")
    result = json.loads(out.read_text())
    return FederationRun(
        name,
        whole_s=whole,
        inside_s=result["seconds"],
        round_s=tuple(result["round_seconds"]),
        final_auroc=_final_auroc(config, weights),
        own_auroc=result["round_auroc"][-1],
        note=f"Ray, {cpus} CPUs, 1 CPU per client",
    )


def run_federations(
    env: FlowerEnv,
    config: FederationConfig,
    *,
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[FederationRun]:
    """The plain loop, fedsilo (whole process, then in process) and Flower, one after another."""
    work = Path(tempfile.mkdtemp(prefix="fedsilo-flower-fed-", dir=workdir))
    try:
        log("plain PyTorch loop (whole process)")
        plain = run_plain_process(config, work)
        log("fedsilo simulate (whole process: the fedsilo CLI)")
        fedsilo_whole = run_fedsilo_process(config, work)
        log("fedsilo simulate (in this process)")
        fedsilo_inside = run_fedsilo_inside(config, work)
        log("Flower simulation (whole process, times itself inside)")
        flower = run_flower(env, config, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fedsilo = FederationRun(
        fedsilo_whole.name,
        whole_s=fedsilo_whole.whole_s,
        inside_s=fedsilo_inside.inside_s,
        round_s=fedsilo_whole.round_s,
        final_auroc=fedsilo_whole.final_auroc,
        own_auroc=fedsilo_whole.own_auroc,
        note=fedsilo_whole.note + "; inside: a second run",
    )
    return [plain, fedsilo, flower]


def _load_note() -> str:
    """The machine may be shared: the load says how much to trust a wall time."""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"load average (1, 5, 15 min) when the table was drawn: {load} on {os.cpu_count()} cores"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _over(value: float | None, floor: float | None) -> float | None:
    return None if value is None or floor is None else value / floor


def verdict(run: FederationRun, plain: FederationRun) -> str:
    """What the table says about the issue's target (fedsilo within 1.3x as a whole process)."""
    ratio = _over(run.whole_s, plain.whole_s)
    if ratio is None or run is plain:
        return ""
    if ratio <= TARGET_VS_PLAIN:
        return f"within {TARGET_VS_PLAIN}x of the floor"
    return f"SLOWER than {TARGET_VS_PLAIN}x target ({ratio:.2f}x)"


def render_federations(
    runs: Sequence[FederationRun], config: FederationConfig, title: str
) -> Table:
    plain = runs[0]
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("framework")
    for header in ("whole s", "x plain", "inside s", "x plain", "steady round s", "x plain",
                   "final AUROC", "own AUROC"):  # fmt: skip
        table.add_column(header, justify="right")
    table.add_column("verdict")
    table.add_column("note")
    for run in runs:
        if run.whole_s is None and run.inside_s is None:
            table.add_row(run.name, NOT_MEASURED, *(["-"] * 7), "", run.note)
            continue
        table.add_row(
            run.name,
            _fmt(run.whole_s, ".2f"),
            _fmt(_over(run.whole_s, plain.whole_s), ".2f"),
            _fmt(run.inside_s, ".2f"),
            _fmt(_over(run.inside_s, plain.inside_s), ".2f"),
            _fmt(run.steady_round_s, ".3f"),
            _fmt(_over(run.steady_round_s, plain.steady_round_s), ".2f"),
            _fmt(run.final_auroc, ".4f"),
            _fmt(run.own_auroc, ".4f"),
            verdict(run, plain),
            run.note,
        )
    synthetic = config.data.synthetic
    table.caption = "\n".join(
        [
            f"{synthetic.hospitals} synthetic hospitals (~{synthetic.mean_stays} stays each), "
            f"{config.rounds} rounds, TabularMLP{config.training.hidden_sizes}, "
            f"{config.training.optimizer} lr {config.training.learning_rate}, batch "
            f"{config.training.batch_size}, min_local_steps {config.training.min_local_steps}; "
            "same data, initial model, trainer and seeds in all three.",
            "whole: wall time of the whole process from outside (interpreter start, imports, "
            "workers, data, rounds); inside: measured within the process around the run.",
            "steady round: median of rounds 2..R (round 1 carries worker start-up). final "
            "AUROC: exact (scikit-learn) on the pooled test splits of each run's final model; "
            "own: what the run itself reported (fedsilo and Flower: from summed histograms).",
            _load_note(),
        ]
    )
    return table


def main(quick: bool) -> None:
    """Entry point for ``python -m bench``."""
    console = Console() if sys.stdout.isatty() else Console(width=180)

    def log(line: str) -> None:
        console.print(f"  {line}", markup=False, highlight=False)

    env = flower_env(create=True, log=log)
    if env.python is None:
        log(f"Flower rows will read '{NOT_MEASURED}': {env.reason}")
    started = time.perf_counter()
    report = run_aggregation(
        env,
        QUICK_NUM_UPDATES if quick else FULL_NUM_UPDATES,
        QUICK_NUM_PARAMS if quick else FULL_NUM_PARAMS,
        log=log,
    )
    title = f"FedAvg: fedsilo vs Flower's aggregate ({time.perf_counter() - started:.0f} s)"
    console.print(render_aggregation(report, title))
    hospitals, rounds, mean_stays = QUICK_FEDERATION if quick else FULL_FEDERATION
    from bench import _federation

    config = _federation.benchmark_config(hospitals, rounds, mean_stays)
    started = time.perf_counter()
    runs = run_federations(env, config, log=log)
    title = (
        f"Whole federation: fedsilo, Flower and the plain PyTorch floor "
        f"({time.perf_counter() - started:.0f} s)"
    )
    console.print(render_federations(runs, config, title))
