"""Admission against hostile answers: an update is admitted or rejected with a named reason.

Training answers (safetensors, manifest inside) and evaluation answers (the manifest alone,
with its score histograms) are made hostile in their framing, header, embedded manifest and
every manifest field; whatever admits must also convert (``class_histogram``) and sum.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedsilo.testing.manifests import admission_context, update_manifest
from fl_core.admission import AdmissionContext, check_manifest, check_update_file, update_metadata
from fl_core.errors import UpdateRejectedError
from fl_core.exchange.histograms import class_histogram
from fl_core.exchange.manifests import (
    MANIFEST_METADATA_KEY,
    EvaluationReport,
    ScoreHistogram,
    SparseCounts,
)
from fl_core.serialisation import encode_weights
from tests.hostile import (
    FUZZ,
    JSON_VALUES,
    RAW_TOKENS,
    dumps,
    nested,
    only_named_rejections,
    safetensors_bytes,
    splice,
)

ADMISSION_REASONS = frozenset(
    {
        "too_large", "malformed_header", "malformed_tensors", "malformed_manifest",
        "site_mismatch", "revoked_site", "unknown_site", "wrong_federation", "stale_round",
        "wrong_task", "replayed", "bad_num_examples", "wrong_tensors", "wrong_dtype",
        "wrong_shape", "out_of_field", "non_finite",
    }
)  # fmt: skip
WEIGHTS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
CONTEXT = admission_context()
EVALUATION = EvaluationReport(
    num_examples=3,
    loss_sum=1.5,
    histogram=ScoreHistogram(
        bins=10,
        positives=SparseCounts(index=[1, 7], count=[1, 1]),
        negatives=SparseCounts(index=[3], count=[1]),
    ),
)
EVALUATE = admission_context(task="evaluate")
TRAIN_MANIFEST = update_manifest().model_dump_json().encode()
EVALUATE_MANIFEST = (
    update_manifest(task="evaluate", num_examples=3, train_loss=None, evaluation=EVALUATION)
    .model_dump_json()
    .encode()
)
VALID = encode_weights(WEIGHTS, update_metadata(update_manifest()))
VALID_HEADER = VALID[8 : 8 + struct.unpack("<Q", VALID[:8])[0]]
VALID_PAYLOAD = VALID[8 + len(VALID_HEADER) :]
HOSTILE_TOKENS = st.one_of(RAW_TOKENS, JSON_VALUES.map(dumps))
SPLICED = st.tuples(st.integers(min_value=0), HOSTILE_TOKENS)


def admit_file(data: bytes) -> None:
    with only_named_rejections(ADMISSION_REASONS):
        manifest, _, weights = check_update_file(data, "site-a", CONTEXT)
        assert manifest.site_id == "site-a"
        assert {name: w.shape for name, w in weights.items()} == {"w": (2, 3), "b": (3,)}
        assert all(np.isfinite(w).all() for w in weights.values())


def admit_manifest(data: bytes, context: AdmissionContext) -> None:
    with only_named_rejections(ADMISSION_REASONS):
        manifest = check_manifest(data, "site-a", context)
        if manifest.evaluation is not None:  # what closing the round does with it
            histogram = class_histogram(manifest.evaluation.histogram)
            total = int(histogram.positives.sum() + histogram.negatives.sum())
            assert total == manifest.evaluation.num_examples
            for reference in manifest.evaluation.reference.values():
                class_histogram(reference)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_an_update_file(data: bytes) -> None:
    admit_file(data)


@FUZZ
@given(SPLICED)
def test_update_file_with_a_hostile_header_value(spliced: tuple[int, bytes]) -> None:
    at, token = spliced
    admit_file(safetensors_bytes(splice(VALID_HEADER, token, at), VALID_PAYLOAD))


@FUZZ
@given(
    st.one_of(
        SPLICED.map(lambda s: splice(TRAIN_MANIFEST, s[1], s[0]).decode("utf-8", "replace")),
        JSON_VALUES.map(lambda v: dumps(v).decode()),
        st.integers(min_value=10, max_value=5000).map(lambda d: nested(d).decode()),
        st.text(max_size=100),
        st.just("\ud800"),
    )
)
def test_update_file_with_a_hostile_embedded_manifest(manifest: str) -> None:
    """Built without ``encode_weights`` so lone surrogates get into the header as escapes."""
    header = dumps(
        {
            "__metadata__": {MANIFEST_METADATA_KEY: manifest},
            "b": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
            "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [12, 36]},
        }
    )
    payload = np.ones(3, np.float32).tobytes() + WEIGHTS["w"].tobytes()
    admit_file(safetensors_bytes(header, payload))


@FUZZ
@given(
    st.one_of(
        SPLICED.map(lambda s: splice(TRAIN_MANIFEST, s[1], s[0])),
        SPLICED.map(lambda s: splice(EVALUATE_MANIFEST, s[1], s[0])),
        st.binary(max_size=200),
        st.integers(min_value=10, max_value=5000).map(nested),
    ),
    st.sampled_from([CONTEXT, EVALUATE]),
)
def test_hostile_manifests(data: bytes, context: AdmissionContext) -> None:
    admit_manifest(data, context)


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "bins": st.one_of(st.integers(min_value=-2, max_value=40), JSON_VALUES),
            "positives": st.fixed_dictionaries(
                {
                    "index": st.lists(st.integers(min_value=-2, max_value=45), max_size=6),
                    "count": st.lists(st.one_of(st.integers(-1, 2**41), JSON_VALUES), max_size=6),
                }
            ),
            "negatives": st.one_of(
                JSON_VALUES,
                st.just({"index": [0], "count": [1]}),
                st.just({"index": [], "count": []}),
            ),
        }
    ),
    st.integers(min_value=-1, max_value=2**62),
)
def test_hostile_score_histograms(histogram: dict[str, object], num_examples: int) -> None:
    """Bins out of range or unordered, counts negative or past int64, lists misaligned."""
    document = update_manifest(task="evaluate", num_examples=3, train_loss=None).model_dump(
        mode="json"
    )
    document["evaluation"] = {
        "num_examples": num_examples,
        "loss_sum": 1.0,
        "histogram": histogram,
        "reference": {"model": histogram},
    }
    document["num_examples"] = num_examples
    admit_manifest(dumps(document), EVALUATE)


def test_a_manifest_that_is_not_utf8_text_is_rejected_not_a_unicode_error() -> None:
    """A lone surrogate in the embedded manifest raised ``UnicodeEncodeError`` out of
    admission; the header now refuses it as malformed."""
    header = (
        b'{"__metadata__": {"' + MANIFEST_METADATA_KEY.encode() + b'": "\\ud800"}, '
        b'"b": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, '
        b'"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [12, 36]}}'
    )
    data = safetensors_bytes(header, bytes(36))
    with pytest.raises(UpdateRejectedError) as rejected:
        check_update_file(data, "site-a", CONTEXT)
    assert rejected.value.reason == "malformed_header"


@pytest.mark.parametrize(
    ("header", "crash"),
    [
        (b'{"__metadata__": ' + nested(5000) + b"}", "RecursionError"),
        (b'{"w": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 24]}}', "OverflowError"),
        (b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b"]}}", "ValueError"),
    ],
)
def test_the_crashes_are_rejections_with_a_named_reason(header: bytes, crash: str) -> None:
    """Each of these escaped admission as ``crash`` and killed the aggregator at every start."""
    with pytest.raises(UpdateRejectedError) as rejected:
        check_update_file(safetensors_bytes(header, bytes(24)), "site-a", CONTEXT)
    assert rejected.value.reason == "malformed_header"


def test_an_honest_answer_is_still_admitted() -> None:
    manifest, _, weights = check_update_file(VALID, "site-a", CONTEXT)
    assert manifest == update_manifest()
    np.testing.assert_array_equal(weights["w"], WEIGHTS["w"])
    assert check_manifest(EVALUATE_MANIFEST, "site-a", EVALUATE).evaluation == EVALUATION
