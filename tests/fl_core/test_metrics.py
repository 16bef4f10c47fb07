import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fl_core.metrics import (
    ClassHistogram,
    auprc_from_histogram,
    auroc_from_histogram,
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
