"""fedsilo side by side with Flower, and both against a plain PyTorch loop.

Why: "is the framework's overhead worth it" needs a peer and a floor measured in the same run
on the same machine, never figures copied from elsewhere.

- Aggregation lives in ``bench/aggregation.py``: fedsilo's server path, Flower's ``aggregate``
  (with and without loading its inputs) and the numpy limit on the same update files,
  interleaved in one table.
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
from dataclasses import dataclass
from pathlib import Path

import safetensors.numpy
from rich.table import Table

from bench._tables import write_tables
from bench._timing import bench_console, interleave
from bench._timing import fmt as _fmt
from bench._timing import load_note as _load_note
from fedsilo.engine.metrics_row import read_metrics
from fl_core.config import FederationConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWER_LOCK = REPO_ROOT / "bench" / "requirements-flower.lock"
FLOWER_VENV = Path(os.environ.get("FEDSILO_FLOWER_VENV", REPO_ROOT / "bench" / ".venv-flower"))
"""Where the Flower environment lives (``FEDSILO_FLOWER_VENV`` moves it, e.g. to a cache)."""
STAMP_NAME = ".fedsilo-lock-sha256"
INSTALL_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 1200
FULL_FEDERATION = (20, 10, 1500)
"""(hospitals, rounds, mean stays): 20 hospitals, 10 rounds, ``make run``'s data."""
QUICK_FEDERATION = (6, 3, 300)
TARGET_VS_PLAIN = 1.3
"""The target: fedsilo as a whole process within 1.3x of the plain loop."""
NOT_MEASURED = "not measured"
REPEATS = 3
PLAIN_NAMES = {1: "plain PyTorch loop, 1 process", 2: "plain PyTorch loop, 2 processes"}


# ---- the Flower environment -----------------------------------------------------------------


@dataclass(frozen=True)
class FlowerEnv:
    """The Flower interpreter, or why there is none (``python`` is None then)."""

    python: Path | None
    reason: str = ""


def _lock_digest() -> str:
    return hashlib.sha256(FLOWER_LOCK.read_bytes()).hexdigest()


def flower_env_for_bench(log: Callable[[str], None]) -> FlowerEnv:
    """``flower_env``, created on first use, saying why its rows go unmeasured when it fails."""
    env = flower_env(create=True, log=log)
    if env.python is None:
        log(f"Flower rows will read '{NOT_MEASURED}': {env.reason}")
    return env


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


def run_plain_process(config: FederationConfig, work: Path, processes: int = 1) -> FederationRun:
    out, weights = work / "plain.json", work / "plain.safetensors"
    synthetic = config.data.synthetic
    whole, _ = _timed(
        [sys.executable, "-m", "bench.plain_loop", "--hospitals", str(synthetic.hospitals),
         "--rounds", str(config.rounds), "--mean-stays", str(synthetic.mean_stays),
         "--seed", str(config.seed), "--threads", "1", "--processes", str(processes),
         "--out", str(out), "--weights", str(weights)]
    )  # fmt: skip
    result = json.loads(out.read_text())
    what = (
        "one process, 1 torch thread"
        if processes == 1
        else (f"{processes} training processes, 1 torch thread each (fedsilo's cores)")
    )
    return FederationRun(
        PLAIN_NAMES[processes],
        whole_s=whole,
        inside_s=result["seconds"],
        round_s=tuple(result["round_seconds"]),
        final_auroc=_final_auroc(config, weights),
        own_auroc=result["round_auroc"][-1],
        note=what,
    )


def run_fedsilo_process(config: FederationConfig, work: Path) -> FederationRun:
    config_path = work / "fedsilo.yaml"
    config_path.write_text(config.model_dump_json())  # JSON is YAML
    fedsilo_cli = Path(sys.executable).with_name("fedsilo")
    command = [str(fedsilo_cli), "simulate", "--config", str(config_path)]
    whole, _ = _timed([*command, "--out", str(work), "--run-id", "fedsilo-cli"])
    return _fedsilo_row(config, work / "fedsilo-cli", whole, None)


def run_fedsilo_inside(config: FederationConfig, work: Path) -> FederationRun:
    from fedsilo.engine.logs import configure_logging
    from fedsilo.engine.process_engine import simulate

    configure_logging("auto", "WARNING")  # as the CLI does: no per-update lines in the table
    result = simulate(config, work, run_id="fedsilo-inside")
    inside = _fedsilo_row(config, result.run_dir, None, result.seconds)
    return FederationRun(
        "fedsilo simulate, in the bench process",
        inside_s=inside.inside_s,
        round_s=inside.round_s,
        final_auroc=inside.final_auroc,
        own_auroc=inside.own_auroc,
        note=inside.note,
    )


def _fedsilo_row(
    config: FederationConfig, run_dir: Path, whole: float | None, inside: float | None
) -> FederationRun:
    rows = read_metrics(run_dir / "metrics.jsonl")
    return FederationRun(
        "fedsilo simulate",
        whole_s=whole,
        inside_s=inside,
        round_s=tuple(row.seconds for row in rows),
        final_auroc=_final_auroc(config, run_dir / "model.safetensors"),
        own_auroc=rows[-1].auroc,
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


@dataclass(frozen=True)
class Repeated:
    """One contender's runs of the federation, in the order they ran."""

    name: str
    runs: tuple[FederationRun, ...]

    @property
    def note(self) -> str:
        return self.runs[-1].note if self.runs else ""

    def values(self, what: Callable[[FederationRun], float | None]) -> list[float]:
        return [v for v in (what(run) for run in self.runs) if v is not None]

    def min(self, what: Callable[[FederationRun], float | None]) -> float | None:
        values = self.values(what)
        return min(values) if values else None

    def median(self, what: Callable[[FederationRun], float | None]) -> float | None:
        values = self.values(what)
        return statistics.median(values) if values else None


def _whole(run: FederationRun) -> float | None:
    return run.whole_s


def _inside(run: FederationRun) -> float | None:
    return run.inside_s


def _steady(run: FederationRun) -> float | None:
    return run.steady_round_s


def run_federations(
    env: FlowerEnv,
    config: FederationConfig,
    *,
    workdir: Path | None = None,
    repeats: int = REPEATS,
    log: Callable[[str], None] = lambda _: None,
) -> list[Repeated]:
    """The plain loop (1 and 2 processes), fedsilo (whole process, and in this process) and
    Flower, ``repeats`` times, interleaved: each repeat runs every contender once, in an
    order rotated from the last repeat's."""
    runners: dict[str, Callable[[Path], FederationRun]] = {
        "plain": lambda work: run_plain_process(config, work),
        "plain2": lambda work: run_plain_process(config, work, processes=2),
        "fedsilo": lambda work: run_fedsilo_process(config, work),
        "fedsilo_inside": lambda work: run_fedsilo_inside(config, work),
        "flower": lambda work: run_flower(env, config, work),
    }

    def in_scratch(runner: Callable[[Path], FederationRun]) -> Callable[[], FederationRun]:
        def run() -> FederationRun:
            work = Path(tempfile.mkdtemp(prefix="fedsilo-flower-fed-", dir=workdir))
            try:
                return runner(work)
            finally:
                shutil.rmtree(work, ignore_errors=True)

        return run

    runs = interleave({name: in_scratch(r) for name, r in runners.items()}, repeats, log)
    return [Repeated(found[0].name, tuple(found)) for found in runs.values()]


def _over(value: float | None, floor: float | None) -> float | None:
    return None if value is None or floor is None else value / floor


def verdict(run: Repeated, plain: Repeated) -> str:
    """What the table says about the target (fedsilo within 1.3x as a whole process)."""
    ratio = _over(run.median(_whole), plain.median(_whole))
    if ratio is None or run is plain or run.name.startswith("plain"):
        return ""
    if ratio <= TARGET_VS_PLAIN:
        return f"within {TARGET_VS_PLAIN}x of the 1-process floor"
    return f"SLOWER than {TARGET_VS_PLAIN}x target ({ratio:.2f}x)"


def render_federations(runs: Sequence[Repeated], config: FederationConfig, title: str) -> Table:
    plain, plain2 = runs[0], runs[1]
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("framework")
    for header in ("whole s min", "whole s median", "x plain 1p", "x plain 2p", "inside s median",
                   "steady round s min", "steady median", "x plain 1p", "x plain 2p",
                   "final AUROC", "own AUROC"):  # fmt: skip
        table.add_column(header, justify="right")
    table.add_column("verdict")
    table.add_column("note")
    for run in runs:
        if not run.values(_whole) and not run.values(_inside):
            table.add_row(run.name, NOT_MEASURED, *(["-"] * 10), "", run.note)
            continue
        table.add_row(
            run.name,
            _fmt(run.min(_whole), ".2f"),
            _fmt(run.median(_whole), ".2f"),
            _fmt(_over(run.median(_whole), plain.median(_whole)), ".2f"),
            _fmt(_over(run.median(_whole), plain2.median(_whole)), ".2f"),
            _fmt(run.median(_inside), ".2f"),
            _fmt(run.min(_steady), ".3f"),
            _fmt(run.median(_steady), ".3f"),
            _fmt(_over(run.median(_steady), plain.median(_steady)), ".2f"),
            _fmt(_over(run.median(_steady), plain2.median(_steady)), ".2f"),
            _fmt(run.runs[-1].final_auroc, ".4f"),
            _fmt(run.runs[-1].own_auroc, ".4f"),
            verdict(run, plain),
            run.note,
        )
    synthetic = config.data.synthetic
    repeats = max(len(run.runs) for run in runs)
    table.caption = "\n".join(
        [
            f"{synthetic.hospitals} synthetic hospitals (~{synthetic.mean_stays} stays each), "
            f"{config.rounds} rounds, TabularMLP{config.training.hidden_sizes}, "
            f"{config.training.optimizer} lr {config.training.learning_rate}, batch "
            f"{config.training.batch_size}, min_local_steps {config.training.min_local_steps}; "
            "same data, initial model, trainer and seeds in all.",
            f"{repeats} runs of each, interleaved (each repeat in a rotated order); min and "
            "median over the runs; ratios of medians. whole: wall time of the whole process "
            "from outside (interpreter start, imports, workers, data, rounds); inside: "
            "measured within the process around the run.",
            "steady round: median of rounds 2..R of a run (round 1 carries worker start-up). "
            "final AUROC: exact (scikit-learn) on the pooled test splits of the last run's final "
            "model; own: what the run itself reported (fedsilo and Flower: from summed "
            "histograms). x plain 2p: against the plain loop given the same cores as fedsilo.",
            _load_note(),
        ]
    )
    return table


def main(quick: bool) -> None:
    """Entry point for ``python -m bench``."""
    console, log = bench_console()
    env = flower_env_for_bench(log)
    log("aggregation alone (server path, limit, Flower): python -m bench --only aggregation")
    hospitals, rounds, mean_stays = QUICK_FEDERATION if quick else FULL_FEDERATION
    from bench import _federation

    config = _federation.benchmark_config(hospitals, rounds, mean_stays)
    started = time.perf_counter()
    runs = run_federations(env, config, log=log)
    title = (
        f"Whole federation: fedsilo, Flower and the plain PyTorch floor "
        f"({time.perf_counter() - started:.0f} s)"
    )
    table = render_federations(runs, config, title)
    console.print(table)
    write_tables("flower_compare", [table])
