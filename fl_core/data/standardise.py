"""Standardisation statistics computed federatedly from per-hospital counts and sums.

Each hospital reports, per feature, how many values it measured and their sum and sum of
squares on its training split; the coordinating side adds them and derives means and standard
deviations that become buffers of the global model. No pooled table is ever formed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_MIN_STD = 1e-6


@dataclass(frozen=True)
class FeatureMoments:
    count: npt.NDArray[np.float64]
    total: npt.NDArray[np.float64]
    total_sq: npt.NDArray[np.float64]

    @classmethod
    def of(cls, x: npt.NDArray[np.floating]) -> FeatureMoments:
        """Moments of one hospital's training features; NaN (not measured) is skipped."""
        values = np.asarray(x, dtype=np.float64)
        measured = np.isfinite(values)
        clean = np.where(measured, values, 0.0)
        return cls(
            count=measured.sum(axis=0).astype(np.float64),
            total=clean.sum(axis=0),
            total_sq=(clean * clean).sum(axis=0),
        )

    def __add__(self, other: FeatureMoments) -> FeatureMoments:
        return FeatureMoments(
            self.count + other.count, self.total + other.total, self.total_sq + other.total_sq
        )

    def to_lists(self) -> dict[str, list[float]]:
        return {
            "count": self.count.tolist(),
            "total": self.total.tolist(),
            "total_sq": self.total_sq.tolist(),
        }


def combine_moments(
    moments: Iterable[FeatureMoments],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Means and standard deviations; a feature nobody measured gets mean 0 and std 1."""
    parts = list(moments)
    if not parts:
        raise ValueError("no hospital reported feature moments")
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    count = np.maximum(total.count, 1.0)
    mean = total.total / count
    variance = np.maximum(total.total_sq / count - mean * mean, 0.0)
    std = np.sqrt(variance)
    std = np.where(std < _MIN_STD, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)
