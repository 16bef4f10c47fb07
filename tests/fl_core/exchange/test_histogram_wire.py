"""The sparse wire form of the score histograms: lossless, compact, and strict at admission."""

from __future__ import annotations

import json
import secrets
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from fl_core.admission import AdmissionContext, check_manifest
from fl_core.errors import UpdateRejectedError
from fl_core.exchange.histograms import class_histogram, histogram_document
from fl_core.exchange.manifests import (
    MAX_BIN_COUNT,
    MAX_HISTOGRAM_BINS,
    EvaluationReport,
    ScoreHistogram,
    SparseCounts,
    UpdateManifest,
)
from fl_core.metrics import ClassHistogram, auroc_from_histogram

BINS = 2000
SHA = "a" * 64

# mostly zeros, as on a hospital's ~130-stay test split, sometimes dense
_counts = st.one_of(st.just(0), st.just(0), st.integers(0, 3), st.integers(0, 10**6))


@st.composite
def _class_histograms(draw: st.DrawFn, bins: int | None = None) -> ClassHistogram:
    bins = bins if bins is not None else draw(st.integers(2, 300))
    positives = draw(arrays(np.int64, bins, elements=_counts))
    negatives = draw(arrays(np.int64, bins, elements=_counts))
    return ClassHistogram(positives=positives, negatives=negatives)


@given(_class_histograms())
def test_dense_to_wire_to_dense_is_lossless(histogram: ClassHistogram) -> None:
    document = histogram_document(histogram)
    parsed = ScoreHistogram.model_validate_json(document.model_dump_json())
    assert parsed == document
    back = class_histogram(parsed)
    np.testing.assert_array_equal(back.positives, histogram.positives)
    np.testing.assert_array_equal(back.negatives, histogram.negatives)
    assert back.positives.dtype == back.negatives.dtype == np.int64
    assert document.bins == histogram.positives.shape[0]
    assert document.num_examples == histogram.num_examples
    assert len(document.positives.index) == np.count_nonzero(histogram.positives)


@given(
    st.integers(2, 300).flatmap(lambda b: st.lists(_class_histograms(b), min_size=1, max_size=8))
)
def test_summing_decoded_histograms_equals_summing_dense(histograms: list[ClassHistogram]) -> None:
    """What the aggregator pools is what the hospitals counted, bin by bin."""
    dense = sum(histograms[1:], histograms[0])
    decoded = [class_histogram(histogram_document(h)) for h in histograms]
    pooled = sum(decoded[1:], decoded[0])
    np.testing.assert_array_equal(pooled.positives, dense.positives)
    np.testing.assert_array_equal(pooled.negatives, dense.negatives)
    assert auroc_from_histogram(pooled) == auroc_from_histogram(dense)


def test_empty_histogram_lists_no_bins() -> None:
    document = histogram_document(ClassHistogram.empty(BINS))
    assert document.model_dump() == {
        "bins": BINS,
        "positives": {"index": [], "count": []},
        "negatives": {"index": [], "count": []},
    }
    assert document.num_examples == 0
    assert class_histogram(document).positives.shape == (BINS,)


def test_wire_form_reads_well_in_json() -> None:
    histogram = ClassHistogram.empty(BINS)
    histogram.positives[[3, 17]] = [1, 2]
    histogram.negatives[5] = 4
    assert json.loads(histogram_document(histogram).model_dump_json()) == {
        "bins": BINS,
        "positives": {"index": [3, 17], "count": [1, 2]},
        "negatives": {"index": [5], "count": [4]},
    }


def test_encoding_refuses_negative_counts_and_unequal_shapes() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        histogram_document(ClassHistogram(np.array([0, -1]), np.array([0, 0])))
    with pytest.raises(ValueError, match=r"\(3,\) and negatives \(2,\)"):
        histogram_document(ClassHistogram(np.zeros(3, np.int64), np.zeros(2, np.int64)))


def _document(**changes: Any) -> dict[str, Any]:
    """A valid wire histogram as parsed JSON, with top-level or ``positives`` changes."""
    positives: dict[str, Any] = {"index": [3, 7], "count": [1, 2]}
    positives.update(changes.pop("positives", {}))
    document = {"bins": 10, "positives": positives, "negatives": {"index": [2], "count": [5]}}
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"positives": {"index": [7, 3]}}, r"strictly increasing, but index\[0\] = 7"),
        ({"positives": {"index": [3, 3]}}, r"strictly increasing, but index\[0\] = 3"),
        ({"positives": {"index": [3, 10]}}, "positives lists bin 10, but bins is 10"),
        ({"positives": {"index": [-1, 3]}}, "index.0\n.*greater than or equal to 0"),
        ({"positives": {"count": [1, 0]}}, "count.1\n.*greater than 0"),
        ({"positives": {"count": [-2, 1]}}, "count.0\n.*greater than 0"),
        ({"positives": {"count": [1, MAX_BIN_COUNT + 1]}}, "less than or equal to"),
        ({"positives": {"count": [1, 2, 3]}}, "index has 2 entries but count has 3"),
        ({"positives": {"index": [3]}}, "index has 1 entries but count has 2"),
        ({"positives": {"count": [1.5, 2]}}, "fractional part"),
        ({"positives": {"extra": 1}}, "positives.extra\n.*Extra inputs are not permitted"),
        ({"note": "hi"}, "note\n.*Extra inputs are not permitted"),
        ({"bins": 1}, "bins\n.*greater than or equal to 2"),
        ({"bins": MAX_HISTOGRAM_BINS + 1}, "bins\n.*less than or equal to"),
    ],
)
def test_wire_histogram_rejects(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScoreHistogram.model_validate_json(json.dumps(_document(**changes)))


def test_valid_document_parses() -> None:
    parsed = ScoreHistogram.model_validate_json(json.dumps(_document()))
    assert parsed.positives == SparseCounts(index=[3, 7], count=[1, 2])
    assert parsed.num_examples == 8


def test_counts_must_match_num_examples() -> None:
    histogram = ScoreHistogram.model_validate(_document())
    assert EvaluationReport(num_examples=8, loss_sum=1.0, histogram=histogram).num_examples == 8
    with pytest.raises(ValidationError, match="histogram counts 8 != num_examples 9"):
        EvaluationReport(num_examples=9, loss_sum=1.0, histogram=histogram)


def _context() -> AdmissionContext:
    return AdmissionContext(
        federation_id="fed",
        round_index=1,
        task="evaluate",
        global_sha256=SHA,
        invited_sites=frozenset({"site-a"}),
        tensor_specs={},
        max_update_bytes=10**6,
        max_manifest_bytes=10**6,
        max_num_examples=10**6,
    )


def _manifest_json(histogram: dict[str, Any]) -> bytes:
    """An evaluation answer as a hospital writes it, with ``histogram`` as given."""
    evaluation = {"num_examples": 8, "loss_sum": 1.0, "histogram": _document()}
    manifest = UpdateManifest(
        federation_id="fed",
        site_id="site-a",
        round_index=1,
        task="evaluate",
        global_sha256=SHA,
        num_examples=8,
        nonce=secrets.token_hex(16),
        evaluation=EvaluationReport.model_validate(evaluation),
    ).model_dump(mode="json")
    manifest["evaluation"]["histogram"] = histogram
    return json.dumps(manifest).encode()


def test_admission_accepts_the_sparse_form() -> None:
    manifest = check_manifest(_manifest_json(_document()), "site-a", _context())
    assert manifest.evaluation is not None and manifest.evaluation.histogram.bins == 10


def test_old_dense_manifest_is_a_normal_rejection() -> None:
    dense = {"positives": [0, 0, 0, 1, 0, 0, 0, 2, 0, 0], "negatives": [0, 0, 5] + [0] * 7}
    with pytest.raises(UpdateRejectedError) as caught:
        check_manifest(_manifest_json(dense), "site-a", _context())
    assert caught.value.reason == "malformed_manifest"
    assert caught.value.detail.startswith("evaluation.histogram.")


def test_typical_manifest_histograms_are_small() -> None:
    """130 test stays in 2000 bins: each histogram lists at most 130 bins, not 4000 counts."""
    rng = np.random.default_rng(0)
    labels = rng.random(130) < 0.1
    scores = 1 / (1 + np.exp(-rng.normal(-2.5, 1.5, 130)))
    document = histogram_document(ClassHistogram.from_scores(scores, labels, BINS))
    assert len(document.positives.index) + len(document.negatives.index) <= 130
    assert len(document.model_dump_json()) < 1500
