"""The defaults sweep selects on training rows only: the test folds are never opened."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.defaults_sweep import (
    INNER_FOLDS,
    CandidateScore,
    choose,
    score_candidate,
    training_only_sites,
)
from fedsilo.ops.evaluate import write_fold_folders
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.eicu.synth import synthesise


@pytest.fixture(scope="module")
def fold_roots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("sweep")
    synthesise(root / "eicu", hospitals=12, stays=600, seed=3)
    prepare_eicu(root / "eicu", root / "prepared", min_stays=1, seed=0)
    return write_fold_folders(root / "prepared", root / "folds", folds=3, seed=0)


def test_sweep_reads_no_test_row(fold_roots: list[Path], tmp_path: Path) -> None:
    clean = training_only_sites(fold_roots[0])
    poisoned = tmp_path / "poisoned"
    shutil.copytree(fold_roots[0], poisoned)
    corrupted = list(poisoned.glob("*/test.parquet"))
    assert corrupted
    for path in corrupted:
        path.write_bytes(b"not parquet: any read of a test fold fails here")
    sites = training_only_sites(poisoned)
    assert [s.site_id for s in sites] == [s.site_id for s in clean]
    for mine, theirs in zip(sites, clean, strict=True):
        np.testing.assert_array_equal(mine.train.x, theirs.train.x)
        np.testing.assert_array_equal(mine.test.y, theirs.test.y)
    # and a federation scored on the poisoned fold gives the very same validation figures
    figures = [
        score_candidate({}, [training_only_sites(root)], 2, tmp_path / name)
        for root, name in ((fold_roots[0], "clean"), (poisoned, "poisoned"))
    ]
    assert figures[0].auroc == figures[1].auroc and figures[0].brier == figures[1].brier


def test_validation_rows_come_from_training_rows_only(fold_roots: list[Path]) -> None:
    from fl_core.data.prepared import PreparedFolderSource

    source = PreparedFolderSource(fold_roots[1])
    for site in training_only_sites(fold_roots[1]):
        train = source.load_split(site.site_id, "train")
        assert site.train.num_examples + site.test.num_examples == train.num_examples
        if train.num_examples >= INNER_FOLDS:
            assert site.test.num_examples > 0  # an inner validation split exists
        rows = {tuple(np.nan_to_num(r)) for r in train.x}
        assert all(tuple(np.nan_to_num(r)) in rows for r in site.test.x)


def _score(auroc: list[float], brier: list[float]) -> CandidateScore:
    return CandidateScore({}, auroc, brier, [None] * len(auroc), 0.0)


def test_choose_takes_the_best_auroc_and_breaks_near_ties_by_brier() -> None:
    sharp = _score([0.70, 0.80, 0.810], [0.09, 0.08, 0.080])
    calibrated = _score([0.70, 0.80, 0.809], [0.09, 0.07, 0.060])
    worse = _score([0.60, 0.70, 0.700], [0.01, 0.01, 0.010])
    chosen, rounds = choose([sharp, calibrated, worse], round_choices=(1, 2, 3))
    assert chosen is calibrated and rounds == 3
    # a strategy row is printed for the record, never chosen as the training default
    fedprox = CandidateScore(
        {"strategy": {"name": "fedprox"}}, [0.9] * 3, [0.01] * 3, [None] * 3, 0
    )
    assert choose([sharp, fedprox], round_choices=(1, 2, 3))[0] is sharp
