"""Feature moments cross the exchange before round 1: gathered, validated, combined."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fl_client.moments import moments_report, publish_moments
from fl_core.data.standardise import FeatureMoments, combine_moments
from fl_core.errors import RoundFailedError, UpdateRejectedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.protocol import Exchange
from fl_server.moments import check_moments, gather_moments
from tests.fl_server._moments_harness import SITES, config, fake_clock, site_data


@pytest.fixture
def exchange(tmp_path) -> Exchange:
    return Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")


def test_gathered_moments_equal_pooled_standardisation(exchange):
    data = [site_data(s, 40 + 10 * i, i) for i, s in enumerate(SITES)]
    for site in data:
        publish_moments(exchange, site)
        publish_moments(exchange, site)  # a restarted hospital reports the same again: fine
    clock, sleep = fake_clock()
    gathered = gather_moments(exchange, SITES, 3, config(), clock=clock, sleep=sleep)
    mean, std = combine_moments(gathered)
    pooled = np.concatenate([d.train.x for d in data])
    np.testing.assert_allclose(mean, np.nanmean(pooled, axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, np.nanstd(pooled, axis=0), rtol=1e-4)


def test_missing_hospital_waits_for_the_deadline_then_goes_on_with_a_quorum(exchange):
    for i, site in enumerate(SITES[:2]):
        publish_moments(exchange, site_data(site, 30, i))
    clock, sleep = fake_clock()
    gathered = gather_moments(exchange, SITES, 3, config(), clock=clock, sleep=sleep)
    assert len(gathered) == 2
    assert clock() >= 10.0


def test_below_quorum_fails_naming_the_counts(exchange):
    publish_moments(exchange, site_data("site-a", 30, 0))
    clock, sleep = fake_clock()
    with pytest.raises(RoundFailedError, match="only 1 of 3 hospitals"):
        gather_moments(exchange, SITES, 3, config(), clock=clock, sleep=sleep)


def _report_bytes(**changes) -> bytes:
    document = moments_report("test", site_data("site-a", 20, 0)).model_dump(mode="json")
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"count": [1.0, 2.0]}, "shape_mismatch"),
        ({"total": [float("nan"), 0.0, 0.0]}, "non_finite"),
        ({"count": [-1.0, 0.0, 0.0]}, "out_of_range"),
        ({"count": [500.0, 0.0, 0.0]}, "out_of_range"),
        ({"total_sq": [0.0, 0.0, 0.0], "total": [50.0, 50.0, 50.0]}, "out_of_range"),
        ({"site_id": "site-b"}, "site_mismatch"),
        ({"count": "many"}, "malformed_moments"),
    ],
)
def test_impossible_reports_are_rejected_with_a_reason(changes, reason):
    with pytest.raises(UpdateRejectedError) as caught:
        check_moments(_report_bytes(**changes), "site-a", "test", 3, 10_000)
    assert caught.value.reason == reason


def test_a_rejected_report_leaves_the_hospital_out_of_the_standardisation(exchange):
    for i, site in enumerate(SITES[:2]):
        publish_moments(exchange, site_data(site, 30, i))
    bad = moments_report("test", site_data("site-c", 30, 2)).model_copy(
        update={"total": [1e30, 0.0, 0.0]}
    )
    exchange.write_moments(bad)
    clock, sleep = fake_clock()
    gathered = gather_moments(exchange, SITES, 3, config(), clock=clock, sleep=sleep)
    assert len(gathered) == 2
    assert clock() < 10.0  # a rejected report is an answer: nobody waits for it
    expected = FeatureMoments.of(site_data("site-a", 30, 0).train.x)
    np.testing.assert_allclose(gathered[0].total, expected.total)
