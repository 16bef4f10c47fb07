"""The quality bars for federated training: the synthetic twin and the real eICU demo.

The twin: a federation within 0.02 of pooled training and within 0.05 of the Bayes AUROC.
The demo: cross-validated per hospital (``fedsilo.ops.evaluate``), because its prepared test
split holds 4 deaths; every figure is printed beside pooled training and APACHE IVa.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsilo.ops.evaluate import cross_validate, score_federation
from fl_client.tabular import TabularTrainer
from fl_core.config import TrainingConfig, load_config
from fl_core.data.base import SiteData, Split
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.eicu.synth import synthesise
from fl_core.data.split import assign_folds
from fl_core.models import TabularMLP, model_weights

from ..conftest import DEMO_DIR

TWIN_HOSPITALS = 40
TWIN_STAYS = 15_000

DEMO_FOLDS = 2
"""The full 5-fold evaluation is ``bench/eicu_bench.py``; two folds hold the bar in CI."""
DEMO_FLOOR = 0.80


def test_folds_hold_every_row_once_and_spread_single_deaths() -> None:
    y = np.array([1] + [0] * 10, dtype=np.int8)  # an eICU demo hospital: one death in 11
    codes = assign_folds(y, seed=3, site_key="site-1", folds=5)
    assert sorted(np.bincount(codes, minlength=5)) == [2, 2, 2, 2, 3]
    deaths = [assign_folds(y, seed=3, site_key=f"site-{i}", folds=5)[0] for i in range(500)]
    assert np.bincount(deaths, minlength=5).min() > 70  # about 100 per fold, never one fold
    assert (assign_folds(y, seed=3, site_key="site-1", folds=5) == codes).all()


def _site(rows: int) -> SiteData:
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    y = (rng.random(rows) < 0.3).astype(np.int8)
    empty = Split(x=x[:0], y=y[:0])
    return SiteData("site-a", ("a", "b", "c"), Split(x=x, y=y), empty, empty)


def test_small_hospitals_make_min_local_steps_large_ones_unchanged() -> None:
    config = TrainingConfig(local_epochs=2, batch_size=128, min_local_steps=32)
    trainer = TabularTrainer(TabularMLP(3), config)
    assert trainer.local_epochs(8) == 32  # one step an epoch: 32 epochs
    assert trainer.local_epochs(300) == 11  # 3 steps an epoch
    assert trainer.local_epochs(5000) == 2  # 80 steps in 2 epochs: unchanged
    off = TabularTrainer(TabularMLP(3), config.model_copy(update={"min_local_steps": 0}))
    assert off.local_epochs(8) == 2


def test_min_local_steps_training_is_deterministic_under_the_seed() -> None:
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        trainer = TabularTrainer(TabularMLP(3), TrainingConfig(min_local_steps=16))
        trainer.train(_site(8), round_index=1, seed=42)
        weights.append(model_weights(trainer.model))
    for name, value in weights[0].items():
        np.testing.assert_array_equal(value, weights[1][name])


@pytest.mark.slow
def test_twin_federation_near_pooled_and_bayes(tmp_path: Path) -> None:
    synthesise(tmp_path / "eicu", hospitals=TWIN_HOSPITALS, stays=TWIN_STAYS, seed=11)
    prepare_eicu(tmp_path / "eicu", tmp_path / "prepared", min_stays=1, seed=0)
    config = load_config(overrides={"simulation.workers": 2})  # the defaults, as make run
    scores, _, _ = score_federation(
        config, tmp_path / "prepared", tmp_path / "runs", "twin", local_only=False
    )
    bayes = scores.references["bayes"]
    print(
        f"\ntwin {TWIN_HOSPITALS} x {TWIN_STAYS}: federated {scores.federated:.4f} "
        f"(histogram {scores.federated_histogram:.4f}) pooled {scores.pooled:.4f} "
        f"APACHE-like {scores.references['apache']:.4f} Bayes {bayes:.4f} "
        f"on {scores.test_stays} test stays, {scores.test_deaths} deaths"
    )
    assert scores.federated is not None and scores.pooled is not None and bayes is not None
    assert abs(scores.federated - scores.pooled) <= 0.02
    assert bayes - scores.federated <= 0.05


@pytest.mark.slow
def test_demo_federation_cross_validated_with_the_defaults(tmp_path: Path) -> None:
    """No setting overridden, the federation keeps up with pooled training."""
    if not DEMO_DIR.is_dir():
        pytest.skip(f"eICU demo not present at {DEMO_DIR}")
    prepare_eicu(DEMO_DIR, tmp_path / "prepared", min_stays=1, seed=0)
    config = load_config(overrides={"simulation.workers": 2})
    cv = cross_validate(
        tmp_path / "prepared", tmp_path / "cv", config, folds=DEMO_FOLDS, local_only=False
    )
    lines = [f"\ndemo, {DEMO_FOLDS}-fold cross-validation per hospital (mean +- sd over folds):"]
    for name in ("federated", "pooled", "apache"):
        mean, sd, count = cv.spread(name)
        oof, _, pooled_over = cv.out_of_fold_spread(name)
        over_stays = f", out-of-fold {oof:.4f}" if pooled_over else ""
        brier = cv.out_of_fold_calibration_mean(name)["brier"]
        lines.append(
            f"  {name:10s} {mean:.4f} +- {sd:.4f} ({count} folds){over_stays}, Brier {brier:.4f}"
        )
    print("\n".join(lines))
    federated, _, _ = cv.spread("federated")
    pooled, _, _ = cv.spread("pooled")
    assert sum(s.test_deaths for s in cv.per_fold) > 150  # every death is tested once
    assert federated >= pooled - 0.05
    assert federated >= DEMO_FLOOR
    # calibrated: no worse a Brier score than pooled training's by more than a hair
    fed_brier = cv.out_of_fold_calibration_mean("federated")["brier"]
    pooled_brier = cv.out_of_fold_calibration_mean("pooled")["brier"]
    assert fed_brier is not None and pooled_brier is not None
    assert fed_brier <= pooled_brier + 0.005
