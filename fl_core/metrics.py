"""AUROC / AUPRC from the hospitals' summed score histograms (DESIGN.md step 6).

No per-patient prediction leaves a hospital: each reports, per class, how many test stays fell
in each fixed bin of predicted risk. Summing the histograms and scoring the bins with
scikit-learn gives the pooled AUROC up to the ties that binning introduces; the bins are
uniform in logit space so that the low risks where most ICU stays lie are resolved finely.
Averaging per-hospital AUROCs would be wrong, and undefined for a hospital with one class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, roc_auc_score

_LOGIT_RANGE = 9.0  # bins span risks from 1.2e-4 to 1 - 1.2e-4; the outer bins catch the rest


def bin_edges(num_bins: int) -> npt.NDArray[np.float64]:
    """Inner edges (num_bins - 1 of them) of the fixed risk bins."""
    logits = np.linspace(-_LOGIT_RANGE, _LOGIT_RANGE, num_bins - 1)
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


def bin_centers(num_bins: int) -> npt.NDArray[np.float64]:
    """A representative risk per bin (monotone, which is all that ranking metrics use)."""
    step = 2 * _LOGIT_RANGE / max(num_bins - 2, 1)
    logits = np.linspace(-_LOGIT_RANGE - step / 2, _LOGIT_RANGE + step / 2, num_bins)
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


@dataclass(frozen=True)
class ClassHistogram:
    """Per-class counts of scores in the fixed bins."""

    positives: npt.NDArray[np.int64]
    negatives: npt.NDArray[np.int64]

    @classmethod
    def empty(cls, num_bins: int) -> ClassHistogram:
        zeros = np.zeros(num_bins, dtype=np.int64)
        return cls(positives=zeros, negatives=zeros.copy())

    @classmethod
    def from_scores(
        cls, scores: npt.ArrayLike, labels: npt.ArrayLike, num_bins: int
    ) -> ClassHistogram:
        """Histogram of finite scores in [0, 1]; rows with a NaN score are left out."""
        score_array = np.asarray(scores, dtype=np.float64)
        label_array = np.asarray(labels).astype(bool)
        keep = np.isfinite(score_array)
        bins = np.searchsorted(bin_edges(num_bins), score_array[keep], side="right")
        kept_labels = label_array[keep]
        return cls(
            positives=np.bincount(bins[kept_labels], minlength=num_bins).astype(np.int64),
            negatives=np.bincount(bins[~kept_labels], minlength=num_bins).astype(np.int64),
        )

    def __add__(self, other: ClassHistogram) -> ClassHistogram:
        return ClassHistogram(self.positives + other.positives, self.negatives + other.negatives)

    @property
    def num_examples(self) -> int:
        return int(self.positives.sum() + self.negatives.sum())


def sum_histograms(histograms: Iterable[ClassHistogram], num_bins: int) -> ClassHistogram:
    total = ClassHistogram.empty(num_bins)
    for histogram in histograms:
        if histogram.positives.shape != (num_bins,):
            raise ValueError(f"histogram has {histogram.positives.shape[0]} bins, not {num_bins}")
        total = total + histogram
    return total


def _weighted_points(
    histogram: ClassHistogram,
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float64], npt.NDArray[np.int64]] | None:
    if histogram.positives.sum() == 0 or histogram.negatives.sum() == 0:
        return None  # one class only: ranking metrics are undefined, not zero
    centers = bin_centers(histogram.positives.shape[0])
    pos_bins = np.flatnonzero(histogram.positives)
    neg_bins = np.flatnonzero(histogram.negatives)
    labels = np.concatenate([np.ones(pos_bins.size, np.int8), np.zeros(neg_bins.size, np.int8)])
    scores = np.concatenate([centers[pos_bins], centers[neg_bins]])
    weights = np.concatenate([histogram.positives[pos_bins], histogram.negatives[neg_bins]])
    return labels, scores, weights


def auroc_from_histogram(histogram: ClassHistogram) -> float | None:
    points = _weighted_points(histogram)
    if points is None:
        return None
    labels, scores, weights = points
    return float(roc_auc_score(labels, scores, sample_weight=weights))


def auprc_from_histogram(histogram: ClassHistogram) -> float | None:
    points = _weighted_points(histogram)
    if points is None:
        return None
    labels, scores, weights = points
    return float(average_precision_score(labels, scores, sample_weight=weights))


def exact_auroc(scores: Sequence[float] | npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Pooled AUROC of raw scores: only for baselines and tests, never across a boundary."""
    label_array = np.asarray(labels)
    if label_array.min() == label_array.max():
        return None
    return float(roc_auc_score(label_array, np.asarray(scores)))
