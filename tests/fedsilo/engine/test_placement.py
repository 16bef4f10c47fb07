"""Hospitals per worker: every hospital exactly once, and equal work where sizes are known."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.engine.placement import ANSWER_STEPS, balanced, place_sites, round_robin
from fl_client.tabular import TabularTrainer, planned_steps
from fl_core.config import TrainingConfig
from fl_core.data.base import DataSource, SiteData
from fl_core.data.synthetic import SyntheticSource


class SizedSource(DataSource):
    """Only what placement reads: ids and training rows."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.rows = rows

    def site_ids(self) -> list[str]:
        return list(self.rows)

    def feature_names(self) -> tuple[str, ...]:
        return ("x",)

    def load_site(self, site_id: str) -> SiteData:
        raise AssertionError("placement must not load a hospital")

    def describe(self) -> str:
        return "sized"

    def train_rows(self) -> dict[str, int]:
        return self.rows


def makespan(plan: list[tuple[str, ...]], cost: dict[str, float]) -> float:
    return max(sum(cost[s] for s in part) for part in plan)


def test_round_robin_deals_every_site_once_in_order():
    sites = [f"site-{i:03d}" for i in range(1, 8)]
    assert round_robin(sites, 3) == [
        ("site-001", "site-004", "site-007"),
        ("site-002", "site-005"),
        ("site-003", "site-006"),
    ]
    assert round_robin(sites[:1], 2) == [("site-001",), ()]


class UnsizedSource(SizedSource):
    def train_rows(self) -> None:  # type: ignore[override]
        return None


def test_a_source_without_sizes_is_dealt_round_robin():
    source = UnsizedSource({f"site-{i}": 10 for i in range(5)})
    assert place_sites(source, 2, TrainingConfig()) == round_robin(source.site_ids(), 2)


@pytest.mark.parametrize(("hospitals", "mean_stays", "seed"), [(20, 1500, 0), (40, 300, 3)])
def test_a_synthetic_federation_knows_its_sizes_and_is_balanced(hospitals, mean_stays, seed):
    """Its sizes are long-tailed: dealt round-robin, one of two workers trained twice as much."""
    source = SyntheticSource(hospitals=hospitals, mean_stays=mean_stays, seed=seed)
    rows = source.train_rows()
    actual = {site: source.load_site(site).train.num_examples for site in source.site_ids()}
    assert all(abs(rows[site] - actual[site]) <= 1 for site in actual), (rows, actual)
    training = TrainingConfig()
    cost = {site: planned_steps(n, training) + ANSWER_STEPS for site, n in actual.items()}
    plan = place_sites(source, 2, training)
    assert sorted(s for part in plan for s in part) == sorted(actual)
    assert makespan(plan, cost) <= sum(cost.values()) / 2 + max(cost.values())
    assert makespan(plan, cost) < makespan(round_robin(source.site_ids(), 2), cost)


@pytest.mark.parametrize("hosts", [1, 2, 3, 7])
def test_skewed_sizes_are_balanced_and_every_site_placed_once(hosts):
    rng = np.random.default_rng(8)
    # eICU-like: most hospitals small, a few with thousands of stays
    rows = {f"site-{i:03d}": int(n) for i, n in enumerate(rng.lognormal(5.5, 1.2, 208))}
    training = TrainingConfig()
    plan = place_sites(SizedSource(rows), hosts, training)
    placed = [s for part in plan for s in part]
    assert sorted(placed) == sorted(rows)
    assert len(plan) == hosts
    for part in plan:  # each host keeps the source's order
        assert list(part) == [s for s in rows if s in part]
    cost = {s: planned_steps(n, training) + ANSWER_STEPS for s, n in rows.items()}
    ideal = sum(cost.values()) / hosts
    assert makespan(plan, cost) <= ideal + max(cost.values())
    if hosts > 1:  # hundreds of hospitals, few big: within 3 % of a perfect split
        assert makespan(plan, cost) <= 1.03 * ideal


def test_sizes_that_round_robin_would_pile_on_one_worker():
    rows = {f"site-{i:03d}": 5000 if i % 2 == 0 else 10 for i in range(40)}
    training = TrainingConfig()
    cost = {s: planned_steps(n, training) + ANSWER_STEPS for s, n in rows.items()}
    dealt = makespan(round_robin(list(rows), 2), cost)
    placed = makespan(place_sites(SizedSource(rows), 2, training), cost)
    assert placed == sum(cost.values()) / 2 < 0.75 * dealt


def test_balanced_puts_one_big_hospital_alone():
    cost = {"big": 10.0, "a": 3.0, "b": 3.0, "c": 3.0, "d": 1.0}
    plan = balanced(list(cost), 2, cost)
    assert ("big",) in plan
    assert makespan(plan, cost) == 10.0


@pytest.mark.parametrize("rows", [1, 8, 127, 128, 129, 4000])
def test_planned_steps_are_the_steps_the_trainer_takes(rows):
    training = TrainingConfig()
    epochs = TabularTrainer.local_epochs.__get__(type("T", (), {"config": training})())(rows)
    assert planned_steps(rows, training) == epochs * -(-rows // training.batch_size)
    assert planned_steps(rows, training) >= training.min_local_steps
