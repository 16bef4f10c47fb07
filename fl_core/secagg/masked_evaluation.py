"""A hospital's evaluation inside the secure aggregation sum, next to its masked weights.

A hospital whose test split is below its disclosure floor may not send its histogram in the
clear, but under secure aggregation it can still count in the federation's AUROC: it appends
its dense per-class histogram and its test loss to the vector it masks, and the aggregator
learns only their sum over the round's survivors. Every hospital does so, small or not (were
the others' evaluations in the clear, subtracting them from the sum would give the small one
away), so no evaluation of a training round is in the clear under secure aggregation. The
segment is always there (zeros from a site with nothing to add), so the vectors line up.

Layout of the segment, as ring elements mod ``2**modulus_bits``::

    positives[bins] | negatives[bins] | contributors | loss_sum * 2**LOSS_FRACTIONAL_BITS

Counts and the contributor flag are integers, exact in the ring. The loss is fixed point; a
site's value is capped so that no sum over the roster can reach ``2**(modulus_bits - 2)``, and
the decoded sum is checked against that bound (a hostile hospital can spoil the round's pooled
evaluation with wrong counts, as it could in the clear, but cannot make it fail).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fl_core.metrics import ClassHistogram
from fl_core.secagg.field import U64, FieldParams
from fl_core.serialisation import TensorSpec

EVALUATION_TENSOR = "fedsilo.secagg.evaluation"
"""The segment's name in a masked update file (no model tensor has a ``fedsilo.`` prefix)."""

VALIDATION_TENSOR = "fedsilo.secagg.validation"
"""The same segment for the validation split (early stopping and the recalibration)."""

LOSS_FRACTIONAL_BITS = 8
"""Loss sums to 1/256: the mean test loss is reported to three decimals."""


def segment_length(num_bins: int) -> int:
    return 2 * num_bins + 2


def segment_spec(num_bins: int) -> TensorSpec:
    return TensorSpec("uint64", (segment_length(num_bins),))


def site_cap(params: FieldParams, num_sites: int) -> int:
    """The most any one element of a site's segment may hold: the roster's sum stays below
    ``2**(modulus_bits - 2)``, so it neither wraps nor reads back as negative."""
    return (1 << (params.modulus_bits - 2)) // max(num_sites, 1) - 1


def encode_evaluation(
    histogram: ClassHistogram | None,
    loss_sum: float,
    num_bins: int,
    params: FieldParams,
    num_sites: int,
) -> U64:
    """One site's segment; ``histogram`` None: the zeros of a site that adds nothing."""
    segment = np.zeros(segment_length(num_bins), dtype=np.uint64)
    if histogram is None:
        return segment
    if histogram.positives.shape != (num_bins,) or histogram.negatives.shape != (num_bins,):
        raise ValueError(f"the histogram has {histogram.positives.shape[0]} bins, not {num_bins}")
    cap = site_cap(params, num_sites)
    segment[:num_bins] = np.clip(histogram.positives, 0, cap).astype(np.uint64)
    segment[num_bins : 2 * num_bins] = np.clip(histogram.negatives, 0, cap).astype(np.uint64)
    segment[2 * num_bins] = 1
    fixed = round(max(loss_sum, 0.0) * (1 << LOSS_FRACTIONAL_BITS))
    segment[2 * num_bins + 1] = min(fixed, cap)
    return segment


@dataclass(frozen=True)
class MaskedEvaluationSum:
    """What the aggregator learns from the segments: the sum over the sites that added one."""

    histogram: ClassHistogram
    loss_sum: float
    num_sites: int

    @property
    def num_examples(self) -> int:
        return self.histogram.num_examples


def decode_evaluation(
    total: U64, num_bins: int, params: FieldParams, num_sites: int
) -> MaskedEvaluationSum | None:
    """The unmasked sum of the survivors' segments; None when no site added an evaluation,
    or when the sum is impossible for ``num_sites`` honest segments (a hostile one)."""
    if total.shape != (segment_length(num_bins),):
        raise ValueError(f"segment has {total.size} elements, expected {segment_length(num_bins)}")
    values = params.reduce(total.copy())
    bound = 1 << (params.modulus_bits - 2)
    contributors = int(values[2 * num_bins])
    if contributors == 0 or contributors > num_sites or bool((values >= bound).any()):
        return None
    counts = values[: 2 * num_bins].astype(np.int64)
    histogram = ClassHistogram(positives=counts[:num_bins], negatives=counts[num_bins:])
    loss_sum = float(values[2 * num_bins + 1]) / float(1 << LOSS_FRACTIONAL_BITS)
    return MaskedEvaluationSum(histogram, loss_sum, contributors)
