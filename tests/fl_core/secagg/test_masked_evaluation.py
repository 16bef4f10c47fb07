"""The evaluation segment of a masked update: exact counts, fixed-point loss, hostile sums."""

from __future__ import annotations

import numpy as np
import pytest

from fl_core.metrics import ClassHistogram
from fl_core.secagg.field import FieldParams
from fl_core.secagg.masked_evaluation import (
    LOSS_FRACTIONAL_BITS,
    decode_evaluation,
    encode_evaluation,
    segment_length,
    site_cap,
)

BINS = 6
PARAMS = FieldParams(modulus_bits=32, fractional_bits=10, clip=4.0)
SITES = 3


def histogram(positives: list[int], negatives: list[int]) -> ClassHistogram:
    return ClassHistogram(np.array(positives, np.int64), np.array(negatives, np.int64))


def test_segments_sum_to_the_pooled_histogram_and_loss() -> None:
    small = histogram([0, 1, 0, 0, 2, 0], [3, 1, 0, 0, 0, 0])
    other = histogram([0, 0, 0, 1, 0, 0], [1, 0, 2, 0, 0, 0])
    segments = [
        encode_evaluation(small, 3.25, BINS, PARAMS, SITES),
        encode_evaluation(None, 0.0, BINS, PARAMS, SITES),  # a site whose evaluation is clear
        encode_evaluation(other, 1.5, BINS, PARAMS, SITES),
    ]
    total = PARAMS.reduce(np.sum(segments, axis=0, dtype=np.uint64))
    found = decode_evaluation(total, BINS, PARAMS, SITES)
    assert found is not None
    assert np.array_equal(found.histogram.positives, small.positives + other.positives)
    assert np.array_equal(found.histogram.negatives, small.negatives + other.negatives)
    assert found.num_sites == 2
    assert found.num_examples == small.num_examples + other.num_examples
    assert found.loss_sum == pytest.approx(4.75, abs=2**-LOSS_FRACTIONAL_BITS)


def test_no_contribution_is_none() -> None:
    zeros = encode_evaluation(None, 0.0, BINS, PARAMS, SITES)
    assert zeros.shape == (segment_length(BINS),) and not zeros.any()
    assert decode_evaluation(zeros, BINS, PARAMS, SITES) is None


def test_a_site_cannot_push_the_sum_past_the_field() -> None:
    huge = histogram([2**40] * BINS, [0] * BINS)
    segment = encode_evaluation(huge, 1e30, BINS, PARAMS, SITES)
    assert int(segment.max()) == site_cap(PARAMS, SITES)
    total = PARAMS.reduce(segment * np.uint64(SITES))
    assert decode_evaluation(total, BINS, PARAMS, SITES) is not None  # still in range


@pytest.mark.parametrize(
    "hostile",
    [
        "too_many_contributors",
        "negative_count",  # a hostile segment wraps the ring: reads back as huge
    ],
)
def test_an_impossible_sum_is_refused(hostile: str) -> None:
    total = encode_evaluation(histogram([1] * BINS, [1] * BINS), 1.0, BINS, PARAMS, SITES)
    if hostile == "too_many_contributors":
        total[2 * BINS] = SITES + 1
    else:
        total[0] = np.uint64((1 << PARAMS.modulus_bits) - 1)
    assert decode_evaluation(total, BINS, PARAMS, SITES) is None


def test_the_wrong_number_of_bins_is_an_error() -> None:
    with pytest.raises(ValueError, match="bins"):
        encode_evaluation(histogram([1], [1]), 0.0, BINS, PARAMS, SITES)
    with pytest.raises(ValueError, match="elements"):
        decode_evaluation(np.zeros(3, np.uint64), BINS, PARAMS, SITES)
