"""AUROC / AUPRC from the hospitals' summed score histograms (docs/design.md step 6).

No per-patient prediction leaves a hospital: each reports, per class, how many test stays fell
in each fixed bin of predicted risk. Summing the histograms and scoring the bins gives the
pooled AUROC up to the ties that binning introduces; the bins are uniform in logit space so
that the low risks where most ICU stays lie are resolved finely. Averaging per-hospital AUROCs
would be wrong, and undefined for a hospital with one class.

The binned AUROC and average precision are computed here with cumulative sums over the bins,
equal to scikit-learn's ``roc_auc_score`` / ``average_precision_score`` on the weighted bin
centres (the tests check them against it): importing scikit-learn would cost each aggregator
and hospital process more CPU than all its round closes together (``python -X importtime -c
"import sklearn.metrics"`` measures the import).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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


def _both_classes(histogram: ClassHistogram) -> bool:
    # one class only: ranking metrics are undefined, not zero
    return bool(histogram.positives.any() and histogram.negatives.any())


def auroc_from_histogram(histogram: ClassHistogram) -> float | None:
    """P(a positive's bin ranks above a negative's), ties (same bin) counting one half."""
    if not _both_classes(histogram):
        return None
    positives = histogram.positives.astype(np.float64)
    negatives = histogram.negatives.astype(np.float64)
    negatives_below = np.cumsum(negatives) - negatives
    pairs = float(np.dot(positives, negatives_below + 0.5 * negatives))
    return pairs / float(positives.sum() * negatives.sum())


def auprc_from_histogram(histogram: ClassHistogram) -> float | None:
    """Average precision: precision at each bin's threshold (highest risk first), weighted
    by the recall that bin adds; a bin is one threshold, as tied scores are in scikit-learn."""
    if not _both_classes(histogram):
        return None
    positives = histogram.positives[::-1].astype(np.float64)
    negatives = histogram.negatives[::-1].astype(np.float64)
    true_positives = np.cumsum(positives)
    flagged = true_positives + np.cumsum(negatives)
    scored = positives > 0  # only these bins add recall
    precision = true_positives[scored] / flagged[scored]
    return float(np.dot(precision, positives[scored]) / true_positives[-1])


def exact_auroc(scores: Sequence[float] | npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Pooled AUROC of raw scores: only for baselines and tests, never across a boundary."""
    from sklearn.metrics import roc_auc_score  # baselines only: keep it off the round path

    label_array = np.asarray(labels)
    if label_array.min() == label_array.max():
        return None
    return float(roc_auc_score(label_array, np.asarray(scores)))
