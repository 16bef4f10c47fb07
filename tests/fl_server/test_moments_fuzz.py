"""Feature moments reports as the aggregator reads them before round 1: valid moments, or
that hospital's moments rejected with a named reason (the federation goes on without them)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from fl_core.config import load_config
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import MomentsReport
from fl_core.exchange.protocol import Exchange, _dump
from fl_server.moments import check_moments, gather_moments, max_report_bytes
from tests.hostile import (
    FUZZ,
    HOSTILE_NUMBERS,
    dumps,
    hostile_documents,
    only_named_rejections,
)

FEATURES = 3
REPORT = _dump(
    MomentsReport(
        federation_id="test",
        site_id="site-a",
        num_examples=20,
        count=[20.0, 20.0, 18.0],
        total=[10.0, -4.0, 3.5],
        total_sq=[30.0, 8.0, 12.0],
    )
)
MOMENTS_REASONS = frozenset(
    {"malformed_moments", "too_large", "site_mismatch", "shape_mismatch", "non_finite",
     "out_of_range"}
)  # fmt: skip


def check(data: bytes) -> None:
    with only_named_rejections(MOMENTS_REASONS):
        _, moments = check_moments(data, "site-a", "test", FEATURES, 10_000)
        for values in (moments.count, moments.total, moments.total_sq):
            assert values.shape == (FEATURES,) and np.isfinite(values).all()


@FUZZ
@given(hostile_documents(REPORT))
def test_hostile_moments_reports(data: bytes) -> None:
    check(data)


@FUZZ
@given(
    st.lists(HOSTILE_NUMBERS, max_size=5),
    st.lists(HOSTILE_NUMBERS, max_size=5),
    st.lists(HOSTILE_NUMBERS, max_size=5),
    HOSTILE_NUMBERS,
)
def test_hostile_numbers_in_every_list(count, total, total_sq, num_examples) -> None:
    """Huge, negative, NaN and infinite values, lists of the wrong length."""
    document = json.loads(REPORT)
    document.update(count=count, total=total, total_sq=total_sq, num_examples=num_examples)
    check(dumps(document))


def test_a_report_too_large_for_the_model_is_rejected_by_its_size() -> None:
    with tempfile.TemporaryDirectory() as root:
        exchange = Exchange(LocalDirectoryStore(Path(root), durable=False), "test")
        huge = REPORT[:-1] + b" " * max_report_bytes(FEATURES) + b"}"
        exchange.store.put_new(exchange.layout.moments_key("site-a"), huge)
        other = REPORT.replace(b"site-a", b"site-b")
        exchange.store.put_new(exchange.layout.moments_key("site-b"), other)
        config = load_config(overrides={"federation_id": "test", "round.min_sites": 1})
        with capture_logs() as logs:
            gathered = gather_moments(exchange, ["site-a", "site-b"], FEATURES, config)
    assert len(gathered) == 1  # site-b's
    rejected = [e for e in logs if e["event"] == "moments_rejected"]
    assert [(e["site_id"], e["reason"]) for e in rejected] == [("site-a", "too_large")]
