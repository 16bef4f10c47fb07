"""Stratified train/valid/test assignment of one hospital's rows, reproducible from a seed.

Each hospital is split on its own (its own random stream, derived from the seed and the
hospital's key) so that adding or removing another hospital never reshuffles this one.
Within a hospital each class is split separately, so that a hospital's rare deaths are spread
over the splits as evenly as whole rows allow.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES: tuple[str, str, str] = ("train", "valid", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
MIN_STAYS_TO_SPLIT = 10
"""A hospital with fewer rows keeps them all for training: a 2-row test split measures nothing."""


def site_seed(seed: int, site_key: str) -> np.random.Generator:
    """A random stream for one hospital that depends only on the seed and the hospital."""
    digest = hashlib.sha256(f"{seed}:{site_key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def class_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Rows of one class per split: valid and test rounded half up, the rest to train."""
    n_valid = int(np.floor(n * fractions[VALID] + 0.5))
    n_test = int(np.floor(n * fractions[TEST] + 0.5))
    if n_valid + n_test > n:  # tiny classes: train first, then test, then valid
        n_test = min(n_test, max(n - 1, 0))
        n_valid = max(n - 1 - n_test, 0)
    return n - n_valid - n_test, n_valid, n_test


def assign_splits(
    y: npt.NDArray[np.int8],
    *,
    seed: int,
    site_key: str,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    min_stays_to_split: int = MIN_STAYS_TO_SPLIT,
) -> npt.NDArray[np.int8]:
    """Split code (0 train, 1 valid, 2 test) per row, stratified by label.

    Rows of a hospital under ``min_stays_to_split`` all go to train. One class is fine: it is
    split like any other.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions {fractions} must be >= 0 and sum to 1")
    codes = np.full(y.shape[0], TRAIN, dtype=np.int8)
    if y.shape[0] < min_stays_to_split:
        return codes
    rng = site_seed(seed, site_key)
    for label in (0, 1):
        rows = np.flatnonzero(y == label)
        rows = rows[rng.permutation(rows.shape[0])]
        n_train, n_valid, _ = class_counts(rows.shape[0], fractions)
        codes[rows[n_train : n_train + n_valid]] = VALID
        codes[rows[n_train + n_valid :]] = TEST
    return codes


def assign_folds(
    y: npt.NDArray[np.int8], *, seed: int, site_key: str, folds: int
) -> npt.NDArray[np.int8]:
    """Cross-validation fold (0 .. folds-1) per row of one hospital, stratified by label.

    Each class is shuffled and dealt round-robin from a random first fold, so a hospital's one
    death lands in any fold with equal chance and, over many hospitals, every fold holds about
    ``1 / folds`` of the deaths. Every row is in exactly one fold, however small the hospital.
    """
    if not 2 <= folds <= 127:
        raise ValueError(f"folds {folds} must be between 2 and 127")
    codes = np.empty(y.shape[0], dtype=np.int8)
    rng = site_seed(seed, f"folds:{site_key}")
    for label in (0, 1):
        rows = np.flatnonzero(y == label)
        rows = rows[rng.permutation(rows.shape[0])]
        first = int(rng.integers(folds))
        codes[rows] = (first + np.arange(rows.shape[0])) % folds
    return codes
