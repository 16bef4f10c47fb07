import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from fl_core.metrics import (
    ClassHistogram,
    auprc_from_histogram,
    auroc_from_histogram,
    bin_centers,
    bin_edges,
    sum_histograms,
)

BINS = 2000


def _scores(rng, n, prevalence=0.09):
    labels = (rng.random(n) < prevalence).astype(np.int8)
    logits = rng.normal(-2.6, 1.2, n) + 1.6 * labels
    return 1 / (1 + np.exp(-logits)), labels


@pytest.mark.parametrize("seed", range(5))
def test_summed_histograms_match_exact_pooled_metrics(seed):
    """The binning error bound: summed site histograms vs the exact pooled AUROC."""
    rng = np.random.default_rng(seed)
    sites = [_scores(rng, int(n)) for n in rng.integers(15, 3000, size=25)]
    total = sum_histograms([ClassHistogram.from_scores(s, y, BINS) for s, y in sites], BINS)
    scores = np.concatenate([s for s, _ in sites])
    labels = np.concatenate([y for _, y in sites])
    assert total.num_examples == labels.size
    assert abs(auroc_from_histogram(total) - roc_auc_score(labels, scores)) < 2e-3
    assert abs(auprc_from_histogram(total) - average_precision_score(labels, scores)) < 1e-2


def test_one_class_is_undefined_not_zero():
    hist = ClassHistogram.from_scores([0.1, 0.2], [0, 0], BINS)
    assert auroc_from_histogram(hist) is None
    assert auprc_from_histogram(hist) is None


def test_a_site_with_one_class_still_counts_in_the_sum():
    rng = np.random.default_rng(1)
    s, y = _scores(rng, 500)
    only_negatives = ClassHistogram.from_scores(rng.random(20) * 0.1, np.zeros(20), BINS)
    total = ClassHistogram.from_scores(s, y, BINS) + only_negatives
    assert total.num_examples == 520
    assert auroc_from_histogram(total) is not None


def test_bins_are_monotone_and_nan_scores_skipped():
    edges = bin_edges(BINS)
    assert np.all(np.diff(edges) > 0)
    hist = ClassHistogram.from_scores([np.nan, 0.5, 0.0, 1.0], [1, 1, 0, 1], BINS)
    assert hist.num_examples == 3


def _weighted_bin_points(histogram: ClassHistogram):
    centers = bin_centers(histogram.positives.size)
    labels = np.r_[np.ones(histogram.positives.size), np.zeros(histogram.negatives.size)]
    weights = np.r_[histogram.positives, histogram.negatives]
    keep = weights > 0
    return labels[keep], np.r_[centers, centers][keep], weights[keep]


@settings(max_examples=200, deadline=None)
@given(
    bins=st.integers(2, 60),
    seed=st.integers(0, 2**32 - 1),
    density=st.floats(0.02, 1.0),
)
def test_binned_metrics_equal_scikit_learn_on_the_weighted_bins(bins, seed, density):
    """Same numbers as scikit-learn scoring each bin centre with its count as weight."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 50, size=(2, bins)) * (rng.random((2, bins)) < density)
    histogram = ClassHistogram(counts[0].astype(np.int64), counts[1].astype(np.int64))
    if not (histogram.positives.any() and histogram.negatives.any()):
        assert auroc_from_histogram(histogram) is None
        assert auprc_from_histogram(histogram) is None
        return
    labels, scores, weights = _weighted_bin_points(histogram)
    expected_auroc = roc_auc_score(labels, scores, sample_weight=weights)
    expected_ap = average_precision_score(labels, scores, sample_weight=weights)
    assert auroc_from_histogram(histogram) == pytest.approx(expected_auroc, abs=1e-12)
    assert auprc_from_histogram(histogram) == pytest.approx(expected_ap, abs=1e-12)


def test_round_path_does_not_import_scikit_learn():
    """The aggregator and hospital workers import these modules; scikit-learn costs ~1 CPU-s."""
    code = (
        "import sys; import fl_core.metrics, fl_server.round_loop, fl_client.trainer; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
