"""The default training settings, chosen on training rows only (eICU-CRD Demo).

``python -m bench --only defaults_sweep [--quick]``. The demo (186 hospitals of ~11 stays, 0-2
deaths each) is dealt into the same outer folds as ``fedsilo data evaluate`` (seed 0). For each
outer fold only its **training** split is read (``PreparedFolderSource.load_split``: the test
fold's file is never opened, which ``tests/bench/test_defaults_sweep.py`` proves by corrupting
it); inside every hospital the training rows are dealt again into ``INNER_FOLDS`` and one inner
fold is the validation split. Every candidate runs a real federation (``fedsilo.engine.inline``: the
round loop, admission and FedAvg over a local exchange) on the inner training rows and is
scored, after every round, on the validation rows by the aggregator's own summed histograms.

Selection: the highest validation AUROC averaged over the outer folds, over every eligible
candidate and round count in ``ROUND_CHOICES``; a candidate within ``TIE`` of the best with a
lower Brier score wins the tie (a mortality model is read as a probability). Rows that change
the strategy (FedProx) are printed for the record but are not eligible: the sweep chooses the
training defaults under the default strategy, FedAvg, which composes with every privacy
setting (FedProx excludes DP-SGD). The chosen settings are ``fl_core.config``'s defaults; the
table is printed so that the choice can be checked.
Only then is the test side read, by ``fedsilo data evaluate`` (``bench/eicu_bench.py``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench import _tables
from fedsilo.engine.inline import run_inline
from fedsilo.engine.logs import configure_logging
from fedsilo.ops.evaluate import write_fold_folders
from fl_core.config import FederationConfig, load_config
from fl_core.data.base import SiteData, Split
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.prepared import PreparedFolderSource
from fl_core.data.split import assign_folds

DEMO_DIR = (Path(__file__).resolve().parents[1] / "../shared/data/eicu-demo").resolve()
OUTER_FOLDS = 5
SWEEP_FOLDS = 3
"""Outer folds the sweep runs (of ``OUTER_FOLDS``): 3 x 7 federations fit in about 40 min."""
INNER_FOLDS = 4
INNER_SEED = 1017
"""Deals the inner folds; any seed but the outer one (0) gives a validation split apart."""
ROUND_CHOICES = (10, 20, 30, 40)
TIE = 0.002

_SGD = {
    "training.optimizer": "sgd",
    "training.class_weighting": "none",
    "training.local_epochs": 1,
    "training.batch_size": 32,
}
BEFORE = {
    "training.optimizer": "adam",
    "training.learning_rate": 5e-4,
    "training.class_weighting": "balanced",
    "training.local_epochs": 2,
    "training.batch_size": 128,
    "training.min_local_steps": 32,
}
"""The Adam settings the SGD candidates are compared with (AUROC 0.706 +- 0.064 on the test
folds)."""
CANDIDATES: tuple[dict[str, Any], ...] = (
    BEFORE,
    {**_SGD, "training.learning_rate": 0.02, "training.min_local_steps": 20},
    {**_SGD, "training.learning_rate": 0.05, "training.min_local_steps": 20},
    {**_SGD, "training.learning_rate": 0.1, "training.min_local_steps": 20},
    {**_SGD, "training.learning_rate": 0.05, "training.min_local_steps": 10},
    {**_SGD, "training.learning_rate": 0.05, "training.min_local_steps": 20,
     "training.class_weighting": "balanced"},
    {**_SGD, "training.learning_rate": 0.05, "training.min_local_steps": 20,
     "strategy": {"name": "fedprox", "mu": 0.01}},
)  # fmt: skip
"""Rounds are not a knob here: every candidate runs ``max(ROUND_CHOICES)`` rounds and is
scored at each choice. How these were narrowed (Adam against SGD, local epochs against a
floor of steps) is in ``docs/model-quality.md``, "The defaults and why"."""
QUICK_CANDIDATES = CANDIDATES[2:3]
QUICK_OUTER = 1


def _take(split: Split, mask: np.ndarray) -> Split:
    return Split(
        x=split.x[mask],
        y=split.y[mask],
        reference_scores={k: v[mask] for k, v in split.reference_scores.items()},
    )


def training_only_sites(fold_root: Path, *, seed: int = INNER_SEED) -> list[SiteData]:
    """Each hospital's training rows of one outer fold, dealt into inner train and validation.

    The validation rows stand where ``run_inline`` reads a test split; the outer test split is
    never read. A hospital with under ``INNER_FOLDS`` training rows keeps them all for training.
    """
    source = PreparedFolderSource(fold_root)
    sites = []
    for site_id in source.site_ids():
        train = source.load_split(site_id, "train")
        if train.num_examples < INNER_FOLDS:
            valid = np.zeros(train.num_examples, dtype=bool)
        else:
            valid = assign_folds(train.y, seed=seed, site_key=site_id, folds=INNER_FOLDS) == 0
        empty = _take(train, np.zeros_like(valid))
        sites.append(
            SiteData(site_id, source.feature_names(), _take(train, ~valid), empty,
                     _take(train, valid))
        )  # fmt: skip
    return sites


@dataclass(frozen=True)
class CandidateScore:
    """Validation figures of one candidate after each round, averaged over the outer folds."""

    overrides: dict[str, Any]
    auroc: list[float]
    brier: list[float]
    slope: list[float | None]
    seconds: float


def _config(overrides: dict[str, Any], rounds: int) -> FederationConfig:
    return load_config(overrides={**overrides, "rounds": rounds})


def score_candidate(
    overrides: dict[str, Any], folds: Sequence[list[SiteData]], rounds: int, work: Path
) -> CandidateScore:
    """One federation per outer fold; validation AUROC, Brier and slope after every round."""
    started = time.monotonic()
    config = _config(overrides, rounds)
    aurocs, briers, slopes = [], [], []
    for index, sites in enumerate(folds):
        rows = run_inline(config, sites, work / f"fold{index}-{time.monotonic_ns()}")
        aurocs.append([row.auroc for row in rows])
        briers.append([row.calibration.brier if row.calibration else np.nan for row in rows])
        slopes.append([row.calibration.slope if row.calibration else None for row in rows])
    slope_means: list[float | None] = []
    for per_round in zip(*slopes, strict=True):
        known = [s for s in per_round if s is not None]
        slope_means.append(float(np.mean(known)) if known else None)
    return CandidateScore(
        overrides=overrides,
        auroc=np.mean(np.array(aurocs, dtype=np.float64), axis=0).tolist(),
        brier=np.mean(np.array(briers, dtype=np.float64), axis=0).tolist(),
        slope=slope_means,
        seconds=time.monotonic() - started,
    )


def eligible(overrides: dict[str, Any]) -> bool:
    """A training setting under the default strategy (a strategy row is for the record)."""
    return "strategy" not in overrides


def choose(
    scores: Sequence[CandidateScore], round_choices: Sequence[int] = ROUND_CHOICES
) -> tuple[CandidateScore, int]:
    """Best validation AUROC over (candidate, rounds); within ``TIE``, the lower Brier."""
    options = [
        (score, rounds)
        for score in scores
        for rounds in round_choices
        if rounds <= len(score.auroc) and eligible(score.overrides)
    ]
    best = max(score.auroc[rounds - 1] for score, rounds in options)
    close = [(s, r) for s, r in options if s.auroc[r - 1] >= best - TIE]
    return min(close, key=lambda option: (option[0].brier[option[1] - 1], option[1]))


def _describe(overrides: dict[str, Any]) -> str:
    if not overrides:
        return "(current defaults)"
    return ", ".join(f"{key.removeprefix('training.')}={value}" for key, value in overrides.items())


def main(quick: bool) -> None:
    console = Console(width=170)
    if not DEMO_DIR.is_dir():
        console.print(f"defaults_sweep: {DEMO_DIR} is absent; nothing to sweep")
        return
    configure_logging("auto", "WARNING")
    candidates = QUICK_CANDIDATES if quick else CANDIDATES
    outer = QUICK_OUTER if quick else SWEEP_FOLDS
    with tempfile.TemporaryDirectory(prefix="fedsilo-sweep-") as tmp:
        root = Path(tmp)
        prepare_eicu(DEMO_DIR, root / "prepared", min_stays=1, seed=0)
        roots = write_fold_folders(root / "prepared", root / "folds", folds=OUTER_FOLDS, seed=0)
        folds = [training_only_sites(r) for r in roots[:outer]]
        scores = []
        for overrides in candidates:
            scores.append(score_candidate(overrides, folds, max(ROUND_CHOICES), root / "runs"))
            console.print(f"{_describe(overrides)}: {scores[-1].seconds:.0f} s", highlight=False)
    chosen, rounds = choose(scores)
    table = Table(
        title=f"validation AUROC / Brier (inner split of the training rows, {outer} outer folds "
        f"of the eICU demo; no test row read)"
    )
    table.add_column("candidate")
    for r in ROUND_CHOICES:
        table.add_column(f"{r} rounds", justify="right")
    table.add_column(f"slope at {rounds}", justify="right")
    table.add_column("s", justify="right")
    for score in scores:
        cells = [f"{score.auroc[r - 1]:.4f} / {score.brier[r - 1]:.4f}" for r in ROUND_CHOICES]
        last = score.slope[rounds - 1]
        mark = " <- chosen" if score is chosen else "" if eligible(score.overrides) else " (record)"
        table.add_row(
            _describe(score.overrides) + mark,
            *cells,
            "n/a" if last is None else f"{last:.2f}",
            f"{score.seconds:.0f}",
        )
    console.print(table)
    _tables.write_tables("defaults_sweep", [table])
    console.print(f"chosen: {_describe(chosen.overrides)}, rounds={rounds}", highlight=False)


if __name__ == "__main__":
    main("--quick" in sys.argv)
