"""The one conversion between the wire ``ScoreHistogram`` and the dense ``ClassHistogram``.

Hospitals send only the non-zero bins (``SparseCounts``); the metrics work on dense int64
arrays. Every producer and reader goes through these two functions, so the encoding lives
in one place and a document that passed validation always converts without error.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fl_core.exchange.manifests import ScoreHistogram, SparseCounts
from fl_core.metrics import ClassHistogram


def histogram_document(histogram: ClassHistogram) -> ScoreHistogram:
    """The wire form of a dense histogram; raises ``ValueError`` for a negative count."""
    positives, negatives = histogram.positives, histogram.negatives
    if positives.ndim != 1 or positives.shape != negatives.shape:
        raise ValueError(
            f"positives {positives.shape} and negatives {negatives.shape} must be 1-D arrays "
            "of the same number of bins"
        )
    return ScoreHistogram(
        bins=positives.shape[0], positives=_sparse(positives), negatives=_sparse(negatives)
    )


def class_histogram(document: ScoreHistogram) -> ClassHistogram:
    """Dense int64 arrays of ``document.bins`` bins, zero where no bin is listed."""
    return ClassHistogram(
        positives=_dense(document.positives, document.bins),
        negatives=_dense(document.negatives, document.bins),
    )


def _sparse(dense: npt.NDArray[np.int64]) -> SparseCounts:
    index = np.flatnonzero(dense)
    return SparseCounts(index=index.tolist(), count=dense[index].tolist())


def _dense(counts: SparseCounts, bins: int) -> npt.NDArray[np.int64]:
    dense = np.zeros(bins, dtype=np.int64)
    dense[np.asarray(counts.index, dtype=np.intp)] = np.asarray(counts.count, dtype=np.int64)
    return dense
