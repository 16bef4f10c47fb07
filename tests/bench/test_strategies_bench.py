"""The strategy table's pieces: every configurable strategy gets a row, numbers are sane."""

from __future__ import annotations

import typing
from pathlib import Path

from bench import strategies_bench
from fedsilo.engine.app import build_source
from fl_core.config import FedAvgStrategy


def test_every_configurable_strategy_is_listed() -> None:
    names = strategies_bench.strategy_names()
    assert names[0] == typing.get_args(FedAvgStrategy.model_fields["name"].annotation)[0]
    assert {"fedadam", "median", "krum", "multikrum", "norm_bounded"} <= set(names)
    assert len(names) == len(set(names))


def test_rounds_to_best_is_the_first_round_within_the_margin() -> None:
    assert strategies_bench.rounds_to_best([0.6, 0.75, 0.795, 0.80, 0.79]) == 3
    assert strategies_bench.rounds_to_best([0.9]) == 1


def test_a_row_on_a_tiny_twin(tmp_path: Path) -> None:
    grid = {"hospitals": 8, "stays": 1200, "rounds": 2}  # min_sites 5: Krum with f=1
    source = build_source(strategies_bench._config(tmp_path, grid, {"name": "fedavg"}))
    sites = [source.load_site(s) for s in source.site_ids()]
    hostile = {sites[0].site_id}
    row = strategies_bench._row(tmp_path, grid, "multikrum", sites, hostile)
    assert row[0] == "multikrum" and row[-1] == "", row
    assert 0.0 <= float(row[1]) <= 1.0 and float(row[2]) >= float(row[1])
    assert 1 <= int(row[3]) <= grid["rounds"]
