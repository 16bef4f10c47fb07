"""The disclosure floor through whole federations (the real round loop and client loop).

A small hospital's clear-text evaluation is withheld and named; under secure aggregation every
hospital's evaluation goes into the masked sum instead, so the federation's pooled metrics
still include the small one: the round's summed stays and histogram-derived figures are
exactly those of a federation without the floor. The final, evaluate-only round runs no
masking, so there the small hospital's evaluation is withheld (the documented gap).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._secagg_harness import Logistic, run_round, secagg_round_config, site_data
from fedsilo.cli.json_documents import status_json
from fedsilo.ops.status import collect_status, status_title
from fl_core.disclosure import DisclosureFloor, Suppression
from fl_core.exchange.manifests import MomentsReport, RoundMetrics, RoundResult, UpdateManifest
from fl_core.exchange.protocol import Exchange

SITES = [f"site-{c}" for c in "abcd"]
FEATURES = 4
SMALL = "site-a"
TEST_STAYS = site_data(SMALL, FEATURES).test.num_examples
FLOORS = {SMALL: DisclosureFloor(min_stays=TEST_STAYS + 1, min_events=1)}
"""Above the small hospital's test split, below its training split: it trains, and its
evaluation is under the floor."""

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def federation(tmp_path: Path, secagg: bool, floors: dict[str, DisclosureFloor] | None) -> Exchange:
    config = secagg_round_config(SITES, **{"privacy.secagg.enabled": secagg})
    exchange, _, _ = run_round(tmp_path, SITES, config, lambda: Logistic(FEATURES), floors=floors)
    return exchange


def result(exchange: Exchange, round_index: int) -> RoundResult:
    found = exchange.read_result(round_index)
    assert found is not None
    return found


def metrics(exchange: Exchange, round_index: int) -> RoundMetrics:
    found = result(exchange, round_index).evaluation
    assert found is not None
    return found


def answer(exchange: Exchange, round_index: int, site_id: str) -> UpdateManifest:
    raw = exchange.read_update_manifest_bytes(round_index, site_id)
    return UpdateManifest.model_validate_json(raw)


def pooled(figures: RoundMetrics) -> dict[str, object]:
    """What the summed histograms give, without the loss (fixed point under the mask)."""
    return figures.model_dump(exclude={"loss", "masked_sites"})


def test_secure_aggregation_counts_a_small_hospital_the_floor_withholds(tmp_path: Path) -> None:
    plain = federation(tmp_path / "no-floor", secagg=True, floors=None)
    floored = federation(tmp_path / "floor", secagg=True, floors=FLOORS)

    small = answer(floored, 1, SMALL)
    assert small.evaluation is None  # nothing of its test split in the clear
    assert small.validation is None  # nor of its validation split: both go into the sum
    floor = TEST_STAYS + 1
    assert small.suppressed == [
        Suppression(path="evaluation", rule="min_stays", floor=floor, disclosed_as="masked_sum"),
        Suppression(path="validation", rule="min_stays", floor=floor, disclosed_as="masked_sum"),
    ]
    # every evaluation goes into the sum: the others in the clear would give the small one away
    assert all(answer(run, 1, s).evaluation is None for run in (plain, floored) for s in SITES)
    assert answer(plain, 1, SMALL).suppressed == []

    with_floor, without = metrics(floored, 1), metrics(plain, 1)
    assert with_floor.num_examples == without.num_examples == TEST_STAYS * len(SITES)
    assert with_floor.num_sites == without.num_sites == len(SITES)
    assert with_floor.masked_sites == without.masked_sites == len(SITES)
    assert pooled(with_floor) == pooled(without)  # AUROC, AUPRC, calibration: same histogram
    assert with_floor.loss == pytest.approx(without.loss, abs=1 / 256)
    assert result(floored, 1).withheld_evaluations == {}
    # the evaluation segment changes nothing in the model the round aggregates
    assert result(floored, 1).next_global_sha256 == result(plain, 1).next_global_sha256

    # the final round evaluates only, with no masked sum: withheld, named, counted
    assert answer(floored, 2, SMALL).evaluation is None
    assert result(floored, 2).withheld_evaluations == {"min_stays": 1}
    assert metrics(floored, 2).num_examples == metrics(plain, 2).num_examples - TEST_STAYS
    assert metrics(floored, 2).num_sites == len(SITES) - 1
    shown = collect_status(floored)
    assert shown.withheld == "round 2: evaluations withheld by disclosure floors: min_stays 1"
    assert shown.withheld in status_title(shown)
    assert json.loads(status_json(shown))["withheld"] == shown.withheld


def test_without_secure_aggregation_the_small_evaluation_is_withheld(tmp_path: Path) -> None:
    floored = federation(tmp_path, secagg=False, floors=FLOORS)
    small = answer(floored, 1, SMALL)
    assert small.evaluation is None and small.validation is None
    assert small.suppressed == [
        Suppression(path="evaluation", rule="min_stays", floor=TEST_STAYS + 1),
        Suppression(path="validation", rule="min_stays", floor=TEST_STAYS + 1),
    ]
    round_one = metrics(floored, 1)
    assert round_one.num_examples == TEST_STAYS * (len(SITES) - 1)
    assert (round_one.num_sites, round_one.masked_sites) == (len(SITES) - 1, 0)
    assert result(floored, 1).withheld_evaluations == {"min_stays": 1}
    assert small.num_examples > 0 and small.train_loss is not None  # it still trains


def test_a_training_split_below_the_floor_declines_and_the_round_goes_on(tmp_path: Path) -> None:
    """Under secure aggregation the decliner is a dropped participant: its masks are removed."""
    tiny = "site-b"
    rows = site_data(tiny, FEATURES).train.num_examples
    floors = {tiny: DisclosureFloor(min_stays=rows + 1, min_events=1)}
    floored = federation(tmp_path, secagg=True, floors=floors)
    declined = answer(floored, 1, tiny)
    assert (declined.declined, declined.policy_rule) == ("policy", "disclosure_floor")
    assert declined.num_examples == 0 and declined.evaluation is None
    assert str(rows) not in (declined.declined_detail or "")
    round_one = result(floored, 1)
    assert [(d.site_id, d.reason) for d in round_one.declined] == [
        (tiny, "policy disclosure_floor")
    ]
    assert sorted(d.site_id for d in round_one.accepted) == [s for s in SITES if s != tiny]
    assert metrics(floored, 1).num_examples == TEST_STAYS * (len(SITES) - 1)
    raw = floored.read_moments_bytes(tiny)
    assert raw is not None
    moments = MomentsReport.model_validate_json(raw)
    assert moments.num_examples == 0
    assert [s.path for s in moments.suppressed] == ["moments"]
