"""At their default settings the server optimizers keep pace with FedAvg.

The case guarded against: with moments started at zero and a server rate of 0.01,
``fedsilo simulate --hospitals 6 --rounds 3 --strategy fedadagrad`` ends at AUROC 0.449 where
FedAvg passes 0.7 in the first round. ``bench/server_opt_bench.py`` prints the curves over
ten rounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.engine.app import build_source
from fedsilo.engine.inline import run_inline
from fl_core.config import load_config

ROUNDS = 3


def _aurocs(strategy: str, root: Path) -> list[float]:
    config = load_config(
        overrides={"rounds": ROUNDS, "data.synthetic.hospitals": 6, "strategy": {"name": strategy}}
    )
    source = build_source(config)
    sites = [source.load_site(s) for s in source.site_ids()]
    rows = run_inline(config, sites, root / strategy)
    return [float("nan") if row.auroc is None else row.auroc for row in rows]


@pytest.fixture(scope="module")
def fedavg(tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    return _aurocs("fedavg", tmp_path_factory.mktemp("fedavg"))


@pytest.mark.parametrize("strategy", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_defaults_within_reach_of_fedavg_from_the_second_round(
    strategy: str, fedavg: list[float], tmp_path: Path
) -> None:
    curve = _aurocs(strategy, tmp_path)
    print(f"\n{strategy} {curve} fedavg {fedavg}")
    assert curve[0] > 0.8  # learning from the first round, not sitting near chance
    for mine, theirs in zip(curve[1:], fedavg[1:], strict=True):
        assert mine >= theirs - 0.03  # measured: 0.00 (fedavgm) to 0.019 (fedadagrad) behind
