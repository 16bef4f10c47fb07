"""Do the server optimizers, at their default settings, learn as fast as FedAvg?

``python -m bench --only server_opt_bench [--quick]``. One row per strategy (FedAvg, FedAvgM,
FedAdam, FedYogi, FedAdagrad), each with the config's defaults for its server learning rate,
momentum, betas and tau, on the default federation of ``fedsilo simulate`` (20 synthetic
hospitals) and on the eICU-shaped twin (40 hospitals): AUROC of the global model after each of
the first ``ROUNDS`` rounds (the aggregator's summed test histograms), the mean over them, and
the first round within ``WITHIN`` of FedAvg's best. Federations run in one process with the
real round loop (``fedsilo.engine.inline``); AUROC is deterministic under the seed, so one run
each. This measures model quality, not speed: no time is shown.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench import _tables, _timing
from fedsilo.engine.app import build_source
from fedsilo.engine.inline import run_inline
from fedsilo.engine.logs import configure_logging
from fl_core.config import FederationConfig, load_config

STRATEGIES = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
ROUNDS = 10
WITHIN = 0.01


def _federations(root: Path, quick: bool) -> list[tuple[str, dict[str, Any]]]:
    federations: list[tuple[str, dict[str, Any]]] = [("default: 20 synthetic hospitals", {})]
    if not quick:
        twin = {
            "data.source": "twin",
            "data.twin.hospitals": 40,
            "data.twin.stays": 20_000,
            "data.twin.cache_dir": str(root / "twins"),
        }
        federations.append(("eICU twin: 40 hospitals x 20,000 stays", twin))
    return federations


def _config(overrides: dict[str, Any], strategy: str, rounds: int) -> FederationConfig:
    return load_config(overrides={**overrides, "rounds": rounds, "strategy": {"name": strategy}})


def aurocs_by_round(overrides: dict[str, Any], strategy: str, root: Path) -> list[float]:
    config = _config(overrides, strategy, ROUNDS)
    source = build_source(config)
    sites = [source.load_site(s) for s in source.site_ids()]
    rows = run_inline(config, sites, root / f"{strategy}-{len(list(root.iterdir()))}")
    return [float("nan") if row.auroc is None else row.auroc for row in rows]


def first_round_within(aurocs: list[float], target: float) -> str:
    hits = [i for i, value in enumerate(aurocs, start=1) if value >= target - WITHIN]
    return str(hits[0]) if hits else f">{len(aurocs)}"


def main(quick: bool) -> None:
    configure_logging("auto", "WARNING")
    console = Console(width=160)
    tables = []
    with tempfile.TemporaryDirectory(prefix="fedsilo-serveropt-") as tmp:
        root = Path(tmp)
        for title, overrides in _federations(root, quick):
            runs = root / "runs"
            runs.mkdir(exist_ok=True)
            curves = {name: aurocs_by_round(overrides, name, runs) for name in STRATEGIES}
            best = max(curves["fedavg"])
            table = Table(title=f"AUROC by round, default settings: {title}")
            table.add_column("strategy")
            for r in range(1, ROUNDS + 1):
                table.add_column(str(r), justify="right")
            table.add_column("mean", justify="right")
            table.add_column(f"first round within {WITHIN} of FedAvg's best", justify="right")
            for name, curve in curves.items():
                table.add_row(
                    name,
                    *(f"{v:.3f}" for v in curve),
                    f"{np.mean(curve):.4f}",
                    first_round_within(curve, best),
                )
            table.caption = _timing.quality_note(
                "pooled test AUROC of the global model after each round",
                "one run per strategy",
            )
            console.print(table)
            tables.append(table)
            _tables.write_tables("server_opt_bench", tables)


if __name__ == "__main__":
    main("--quick" in sys.argv)
