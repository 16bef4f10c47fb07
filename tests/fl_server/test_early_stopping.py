"""Early stopping and the recalibration, decided by the aggregator on summed validation reports.

Hospitals are scripted (``_round_harness``'s ``Script``): each answer carries a validation
report whose loss follows a set course over the rounds, so when training must stop is known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.engine.final_model import final_round, published_weights
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.histograms import histogram_document
from fl_core.exchange.manifests import EvaluationReport, GlobalManifest, RoundMetrics
from fl_core.exchange.protocol import Exchange
from fl_core.metrics import ClassHistogram
from fl_core.recalibration import RISK_INTERCEPT, RISK_SLOPE
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop
from fl_server.validation_round import stopping_loss
from tests.fl_server._round_harness import INITIAL as ROUND_LOOP_INITIAL
from tests.fl_server._round_harness import (
    SITES,
    FakeTime,
    honest_weights,
    make_config,
    signed,
)
from tests.fl_server._round_harness import manifest_for as plain_answer

BINS = 400
INITIAL = {
    **ROUND_LOOP_INITIAL,
    RISK_INTERCEPT: np.zeros(1, np.float32),
    RISK_SLOPE: np.ones(1, np.float32),
}


def over_confident(site: str, seed: int, stays: int = 400) -> EvaluationReport:
    """A report of risks twice as extreme as the outcomes bear out (true scaling 0, 0.5)."""
    rng = np.random.default_rng([SITES.index(site), seed])
    logit = rng.normal(-2.0, 2.5, stays)
    labels = rng.random(stays) < 1 / (1 + np.exp(-0.5 * logit))
    histogram = ClassHistogram.from_scores(1 / (1 + np.exp(-logit)), labels, BINS)
    return EvaluationReport(
        num_examples=stays, loss_sum=0.0, histogram=histogram_document(histogram)
    )


class ValidationCourse(RoundEvents):
    """Answers every round; the validation loss of round r's model is ``losses[r - 1]``."""

    def __init__(self, exchange: Exchange, losses: list[float]) -> None:
        self.exchange = exchange
        self.losses = losses

    def round_opened(self, manifest: GlobalManifest) -> None:
        r = manifest.round_index
        loss = self.losses[min(r, len(self.losses)) - 1]
        for site in SITES:
            scored = over_confident(site, r)
            validation = EvaluationReport(
                num_examples=scored.num_examples,
                loss_sum=loss * scored.num_examples,
                histogram=scored.histogram,
            )
            test = over_confident(site, 1000 + r)
            update = plain_answer(manifest, site, evaluation=test, validation=validation)
            weights = {**honest_weights(site, r), RISK_INTERCEPT: INITIAL[RISK_INTERCEPT]}
            weights[RISK_SLOPE] = INITIAL[RISK_SLOPE]
            data = signed(weights, update) if manifest.task == "train" else None
            self.exchange.write_update(update, data)


def run(tmp_path: Path, losses: list[float], **overrides: object) -> Exchange:
    config = make_config(**{"rounds": 10, "evaluation.histogram_bins": BINS, **overrides})
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), config.federation_id)
    fake = FakeTime()
    state = RoundLoop(
        exchange,
        FedAvgAggregator(),
        config,
        SITES,
        initial_weights=dict(INITIAL),
        events=ValidationCourse(exchange, losses),
        clock=fake.clock,
        sleep=fake.sleep,
    ).run()
    assert state.phase == "done"
    return exchange


def test_training_stops_once_the_summed_validation_loss_stops_improving(tmp_path: Path) -> None:
    # best at round 3; rounds 4 and 5 are no better: patience 2 ends training with round 5
    # (no recalibration: the raw loss, which the script sets, is the one followed)
    exchange = run(
        tmp_path,
        [0.6, 0.5, 0.4, 0.45, 0.4, 0.3],
        **{"evaluation.early_stopping_patience": 2, "evaluation.recalibrate": False},
    )
    results = [exchange.read_result(r) for r in range(1, 7)]
    assert all(r is not None for r in results)
    assert [r.stopped_early for r in results if r is not None] == [False] * 4 + [True, False]
    assert results[4] is not None and results[4].evaluation is not None
    assert results[4].evaluation.validation_loss == pytest.approx(0.4)
    assert results[4].evaluation.validation_examples == 400 * len(SITES)
    final = exchange.read_global_manifest(6)
    assert final is not None and final.final and final.task == "evaluate"
    assert exchange.read_global_manifest(7) is None
    assert final_round(exchange, 10) == 6


def test_patience_zero_runs_every_round(tmp_path: Path) -> None:
    exchange = run(tmp_path, [0.3, 0.4, 0.5], rounds=4, **{"evaluation.early_stopping_patience": 0})
    assert not any(r.stopped_early for i in range(1, 6) if (r := exchange.read_result(i)))
    assert final_round(exchange, 4) == 5
    final = exchange.read_global_manifest(5)
    assert final is not None and final.final


def test_the_final_model_is_published_with_the_scaling_fitted_on_validation(
    tmp_path: Path,
) -> None:
    exchange = run(tmp_path, [0.5], rounds=2)
    fitted = exchange.read_result(3)
    assert fitted is not None and fitted.recalibration is not None
    recalibration = fitted.recalibration
    assert recalibration.slope == pytest.approx(0.5, abs=0.1)
    assert recalibration.intercept == pytest.approx(0.0, abs=0.2)
    assert recalibration.validation_examples == 400 * len(SITES)
    before, after = recalibration.test_before, recalibration.test_after
    assert before is not None and before.slope is not None and before.slope < 0.65
    assert after is not None and after.slope == pytest.approx(1.0, abs=0.2)
    assert after.brier < before.brier
    assert exchange.read_result(2).recalibration is None  # type: ignore[union-attr]
    published = published_weights(exchange, 2)
    assert float(published[RISK_SLOPE][0]) == pytest.approx(recalibration.slope, rel=1e-6)
    assert float(published[RISK_INTERCEPT][0]) == pytest.approx(recalibration.intercept, abs=1e-6)


def test_recalibration_off_publishes_the_model_as_trained(tmp_path: Path) -> None:
    exchange = run(tmp_path, [0.5], rounds=1, **{"evaluation.recalibrate": False})
    assert exchange.read_result(2).recalibration is None  # type: ignore[union-attr]
    published = published_weights(exchange, 1)
    assert float(published[RISK_SLOPE][0]) == 1.0 and float(published[RISK_INTERCEPT][0]) == 0.0


def test_with_recalibration_the_loss_after_the_scaling_is_followed(tmp_path: Path) -> None:
    """Over-confident risks: the raw loss is worse than the scaled one, which stopping uses."""
    exchange = run(tmp_path, [0.9], rounds=2)
    metrics = exchange.read_result(1).evaluation  # type: ignore[union-attr]
    assert metrics is not None and metrics.validation_loss == pytest.approx(0.9)
    scaled = metrics.validation_loss_recalibrated
    assert scaled is not None and 0.2 < scaled < 0.9
    assert stopping_loss(metrics) == scaled
    unscaled = RoundMetrics.model_validate(
        {**metrics.model_dump(), "validation_loss_recalibrated": None}
    )
    assert stopping_loss(unscaled) == pytest.approx(0.9)
