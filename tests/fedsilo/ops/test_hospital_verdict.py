"""The per-hospital verdict: out-of-fold losses with intervals, small hospitals not counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedsilo.ops.evaluation_summary import FUNNEL_FILE, hospital_verdicts, write_funnel
from fedsilo.ops.hospital_verdict import (
    MIN_VERDICT_EVENTS,
    hospital_verdict,
    mean_interval,
    verdict_from_file,
)

BINS = 200


def stays(deaths: int, survivors: int) -> np.ndarray:
    return np.array([1] * deaths + [0] * survivors, np.int8)


def test_a_hospital_without_enough_deaths_is_not_evaluable_and_not_a_loss() -> None:
    labels = stays(0, 10)
    own = np.full(10, 0.001)  # trained on survivors only: no risk, and right every time
    federated = np.full(10, 0.08)
    verdict = hospital_verdict("site-a", labels, federated, own, None)
    assert verdict.own is not None and verdict.own.log_loss < verdict.federated.log_loss
    assert not verdict.evaluable and verdict.not_worse is None
    assert verdict.log_loss_difference is None
    assert "0 death(s), 10 survivor(s)" in verdict.not_evaluable_reason()
    assert f"needs {MIN_VERDICT_EVENTS}" in verdict.not_evaluable_reason()


def test_the_verdict_follows_the_interval_of_the_paired_losses() -> None:
    rng = np.random.default_rng(0)
    labels = stays(20, 180)
    good = np.where(labels == 1, 0.6, 0.05) + rng.uniform(-0.02, 0.02, 200)
    poor = np.where(labels == 1, 0.2, 0.3) + rng.uniform(-0.02, 0.02, 200)
    better = hospital_verdict("site-b", labels, good, poor, None)
    assert better.evaluable and better.not_worse
    assert better.log_loss_difference is not None and better.log_loss_difference.high < 0
    worse = hospital_verdict("site-c", labels, poor, good, None)
    assert worse.not_worse is False  # its whole interval lies above 0
    assert worse.log_loss_difference is not None and worse.log_loss_difference.low > 0


def test_a_few_stays_give_a_wide_interval_that_decides_nothing() -> None:
    labels = stays(2, 8)
    own = np.array([0.9, 0.02, *[0.02] * 8])  # sure of one death, blind to the other
    verdict = hospital_verdict("site-d", labels, np.full(10, 0.2), own, None)
    interval = verdict.log_loss_difference
    assert interval is not None and interval.low < 0 < interval.high
    assert verdict.not_worse


def test_mean_interval_is_the_t_interval() -> None:
    found = mean_interval(np.array([1.0, 2.0, 3.0, 4.0]))
    assert found.estimate == pytest.approx(2.5)
    assert found.high - found.estimate == pytest.approx(3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2)


def test_apache_is_scored_on_the_stays_it_predicts() -> None:
    labels = stays(3, 3)
    apache = np.array([0.9, np.nan, 0.8, 0.1, np.nan, 0.2])
    verdict = hospital_verdict("site-e", labels, np.full(6, 0.5), np.full(6, 0.5), apache)
    assert verdict.apache is not None
    expected = np.mean(-np.log([0.9, 0.8, 0.9, 0.8]))
    assert verdict.apache.log_loss == pytest.approx(expected)


def test_from_the_stays_file_share_and_funnel(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sites, labels, federated, own = [], [], [], []
    for index, (deaths, survivors) in enumerate([(0, 12), (1, 10), (3, 20), (4, 30)]):
        y = stays(deaths, survivors)
        sites += [f"site-{index}"] * y.size
        labels.append(y)
        federated.append(np.clip(0.3 * y + 0.05 + rng.uniform(0, 0.05, y.size), 0, 1))
        own.append(np.full(y.size, 0.02))
    y = np.concatenate(labels)
    own_risk = np.concatenate(own)
    own_risk[:3] = np.nan  # a fold where site-0 had no training rows
    path = tmp_path / "stays.parquet"
    pq.write_table(
        pa.table(
            {
                "repeat": np.zeros(y.size, np.int16),
                "fold": np.zeros(y.size, np.int16),
                "site": sites,
                "label": y,
                "federated": np.concatenate(federated),
                "local_only": own_risk,
            }
        ),
        path,
    )
    found = verdict_from_file(path, BINS)
    assert found is not None
    assert [h.site_id for h in found.evaluable] == ["site-2", "site-3"]
    assert found.not_worse_share == 1.0
    assert [f.site_id for f in found.funnel] == [f"site-{i}" for i in range(4)]
    assert found.funnel[3].deaths == 4 and found.funnel[3].expected_deaths > 0
    rows = hospital_verdicts(found)
    assert (rows.hospitals, rows.evaluable, rows.min_events) == (4, 2, MIN_VERDICT_EVENTS)
    assert rows.rows[0].verdict.startswith("not evaluable")
    page = write_funnel(found, tmp_path)
    drawn = page.read_text()
    assert page.name == FUNNEL_FILE and "site-3" in drawn and "99.8% control limits" in drawn


def test_without_own_models_there_is_no_verdict(tmp_path: Path) -> None:
    path = tmp_path / "stays.parquet"
    table = {"repeat": [0], "fold": [0], "site": ["a"], "label": [1], "federated": [0.5]}
    pq.write_table(pa.table(table), path)
    assert verdict_from_file(path, BINS) is None
