"""A data profile rides in a hospital's moments report: a hostile one is refused with a
named reason, leaves that hospital out, and never stops the aggregator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from structlog.testing import capture_logs

from fl_client.moments import moments_report, publish_moments
from fl_core.config import load_config
from fl_core.data.base import SiteData, Split
from fl_core.errors import UpdateRejectedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.protocol import Exchange
from fl_server.moments import check_moments, gather_moments, max_report_bytes

NAMES = ("age", "lactate", "male")


def site_data(site_id: str, rows: int, seed: int) -> SiteData:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [rng.normal(60, 15, rows), rng.lognormal(0.5, 0.4, rows), rng.random(rows) < 0.5]
    ).astype(np.float32)
    x[::5, 1] = np.nan
    y = (rng.random(rows) < 0.2).astype(np.int8)
    empty = Split(x[:0], y[:0])
    return SiteData(site_id, NAMES, Split(x, y), empty, empty)


def _document() -> dict:
    return moments_report("test", site_data("site-a", 80, 0)).model_dump(mode="json")


def _check(document: dict) -> None:
    check_moments(json.dumps(document).encode(), "site-a", "test", len(NAMES), 10_000)


def test_an_honest_profile_passes_and_fits_the_size_limit():
    document = _document()
    assert document["profile"]["min_count"] == 10
    _check(document)
    data = json.dumps(document, indent=1).encode()
    assert len(data) < max_report_bytes(len(NAMES))


def _set(document: dict, path: tuple, value: object) -> dict:
    target = document["profile"]
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("features", 0, "counts", 5), 3, "malformed_moments"),  # a count under the floor
        (("features", 0, "counts", 5), -20, "malformed_moments"),
        (("features", 0, "counts", 5), 2**62, "malformed_moments"),
        (("features", 0, "counts", 5), "many", "malformed_moments"),
        (("features", 0, "edges", 1), -1e6, "malformed_moments"),  # edges must increase
        (("features", 0, "edges", 1), float("inf"), "malformed_moments"),
        (("features", 0, "edges"), list(range(100)), "malformed_moments"),
        (("features", 0, "name"), "x" * 5000, "malformed_moments"),
        (("min_count",), 0, "malformed_moments"),
        (("features", 0, "counts", 5), 10_000, "malformed_profile"),  # more rows than values
        (("features", 1, "missing"), 50, "malformed_profile"),
        (("features",), [], "malformed_profile"),
    ],
)
def test_a_hostile_profile_is_refused_with_a_named_reason(path, value, reason):
    with pytest.raises(UpdateRejectedError) as caught:
        _check(_set(_document(), path, value))
    assert caught.value.reason == reason
    assert caught.value.detail


def test_a_profile_nested_or_padded_beyond_its_size_is_refused_before_parsing():
    document = _document()
    document["profile"]["features"][0]["edges"] = [[[[[[0.0]]]]]] * 20_000
    data = json.dumps(document).encode()
    with pytest.raises(UpdateRejectedError) as caught:
        check_moments(data, "site-a", "test", len(NAMES), 10_000)
    assert caught.value.reason in {"too_large", "malformed_moments"}


def test_the_aggregator_leaves_out_a_hostile_profile_and_goes_on(tmp_path):
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    for i, site in enumerate(("site-a", "site-b")):
        publish_moments(exchange, site_data(site, 60, i))
    hostile = moments_report("test", site_data("site-c", 60, 2)).model_dump(mode="json")
    hostile["profile"]["features"][0]["counts"][5] = 1_000_000
    exchange.store.put_new(exchange.layout.moments_key("site-c"), json.dumps(hostile).encode())
    config = load_config(overrides={"federation_id": "test", "round.min_sites": 2})
    with capture_logs() as logs:
        gathered = gather_moments(exchange, ["site-a", "site-b", "site-c"], len(NAMES), config)
    assert len(gathered) == 2
    rejected = [(e["site_id"], e["reason"]) for e in logs if e["event"] == "moments_rejected"]
    assert rejected == [("site-c", "malformed_profile")]
