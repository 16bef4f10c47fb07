"""The strategy table on the eICU twin: one row per aggregation strategy.

``python -m bench --only strategies_bench [--quick]``. Every strategy the config knows is
tried (``strategy.name``); one whose aggregator this build lacks is listed as skipped. Per
strategy, with its default parameters: the final AUROC (pooled test histograms of the final
model), the best AUROC over the rounds, the first round within 0.01 of that best, and the
final AUROC when 20 % of the hospitals are hostile (sign-flipped x10 updates, as in
``tests/fl_server/strategies/test_poisoning.py``). Krum and Multi-Krum are told how many
hostile hospitals to expect. Federations run in one process (``fedsilo.engine.inline``).

This table measures model quality, not speed: AUROC is deterministic under the seed, so each
federation runs once, and no time is shown (timing comparisons live in the other benchmarks,
interleaved and repeated, see ``bench/_timing.py``).
"""

from __future__ import annotations

import tempfile
import typing
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import _tables, _timing
from fedsilo.engine.app import FederatedApp, build_source
from fedsilo.engine.attacks import hostile_app
from fedsilo.engine.inline import run_inline
from fedsilo.engine.metrics_row import MetricsRow
from fl_core.config import FederationConfig, StrategyConfig, load_config
from fl_core.data.base import SiteData
from fl_core.errors import ConfigError, FedsiloError
from fl_server.strategies import build_aggregator

QUICK = {"hospitals": 20, "stays": 12_000, "rounds": 8}
FULL = {"hospitals": 60, "stays": 40_000, "rounds": 15}
WITHIN = 0.01


def strategy_names() -> list[str]:
    """Every ``strategy.name`` the config accepts, in the order the config lists them."""
    union = typing.get_args(StrategyConfig)[0]
    names: list[str] = []
    for option in typing.get_args(union):
        names.extend(typing.get_args(option.model_fields["name"].annotation))
    return names


def _config(root: Path, grid: dict[str, int], strategy: dict[str, Any]) -> FederationConfig:
    return load_config(
        overrides={
            "rounds": grid["rounds"],
            "data.source": "twin",
            "data.twin.hospitals": grid["hospitals"],
            "data.twin.stays": grid["stays"],
            "data.twin.cache_dir": str(root / "twins"),
            "round.min_sites": grid["hospitals"] // 2 + 1,
            "strategy": strategy,
        }
    )


def rounds_to_best(aurocs: list[float], within: float = WITHIN) -> int:
    """The first round whose AUROC is within ``within`` of the best round's."""
    best = max(aurocs)
    return next(index for index, value in enumerate(aurocs, start=1) if value >= best - within)


def _aurocs(rows: list[MetricsRow]) -> list[float]:
    return [row.auroc for row in rows if row.auroc is not None]


def _row(
    root: Path, grid: dict[str, int], name: str, sites: list[SiteData], hostile: set[str]
) -> list[str]:
    strategy: dict[str, Any] = {"name": name}
    if name in ("krum", "multikrum"):
        strategy["byzantine"] = len(hostile)
    try:
        config = _config(root, grid, strategy)
        build_aggregator(config)
    except ConfigError as err:
        return [name, "-", "-", "-", "-", f"skipped: {str(err).splitlines()[0][:70]}"]
    try:
        clean = _aurocs(run_inline(config, sites, root / f"{name}-clean"))
        attacked_app: FederatedApp = hostile_app(hostile, "sign_flip", 10.0)
        attacked = _aurocs(run_inline(config, sites, root / f"{name}-hostile", attacked_app))
    except FedsiloError as err:
        return [name, "-", "-", "-", "-", f"failed: {str(err).splitlines()[0][:70]}"]
    return [
        name,
        f"{clean[-1]:.3f}",
        f"{max(clean):.3f}",
        str(rounds_to_best(clean)),
        f"{attacked[-1]:.3f}",
        "",
    ]


def main(quick: bool) -> None:
    grid = QUICK if quick else FULL
    console = Console(width=160)
    with tempfile.TemporaryDirectory(prefix="fedsilo-strategies-") as tmp:
        root = Path(tmp)
        source = build_source(_config(root, grid, {"name": "fedavg"}))
        sites = [source.load_site(site_id) for site_id in source.site_ids()]
        by_size = sorted(sites, key=lambda s: (-s.train.num_examples, s.site_id))
        hostile = {site.site_id for site in by_size[2::5]}
        table = Table(
            title=(
                f"strategies on the eICU twin: {len(sites)} hospitals x {grid['stays']:,} stays, "
                f"{grid['rounds']} rounds; hostile: {len(hostile)} hospitals sign-flip x10"
            )
        )
        for column in (
            "strategy",
            "final AUROC",
            "best AUROC",
            f"rounds to {WITHIN} of best",
            "final AUROC, 20% hostile",
            "note",
        ):
            table.add_column(column)
        for name in strategy_names():
            table.add_row(*_row(root, grid, name, sites, hostile))
            console.print(f"{name} done", highlight=False)
        table.caption = _timing.quality_note(
            "pooled test AUROC from the hospitals' summed histograms",
            "one run per strategy and setting",
        )
        console.print(table)
        _tables.write_tables("strategies_bench", [table])


if __name__ == "__main__":
    import sys

    main("--quick" in sys.argv)
