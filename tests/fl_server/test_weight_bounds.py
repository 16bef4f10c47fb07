"""No hospital's FedAvg weight exceeds its registered rows, nor ``round.max_weight_share``."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_core.aggregation import weighted_mean
from fl_core.config import load_config
from fl_core.errors import ConfigError, UpdateRejectedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest, MomentsReport
from fl_core.exchange.protocol import Exchange
from fl_server.weight_bounds import check_registered_claim, read_registered_examples, weight_cap
from tests.fl_server._round_harness import (
    SITES,
    Crash,
    Script,
    final_model,
    honest_weights,
    make_config,
    manifest_for,
    run_loop,
    signed,
)


def report(site_id: str, rows: int, federation_id: str = "test") -> MomentsReport:
    return MomentsReport(
        federation_id=federation_id,
        site_id=site_id,
        num_examples=rows,
        count=[float(rows)],
        total=[0.0],
        total_sq=[0.0],
    )


# ---- the cap ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "share", "cap"),
    [
        ([10, 20, 30, 40], 0.5, None),  # nobody over half
        ([1000, 10, 10], 0.5, 20),  # trimmed to the others' sum
        ([1000, 100], 0.5, 100),  # two hospitals: the plain mean
        ([100, 100], 0.5, None),
        ([10_000_000, 28, 30], 0.5, 58),
        ([100, 90, 1], 0.5, 91),
        ([5], 0.5, 5),  # one hospital: the cap cannot be met, nothing to trim against
        ([100, 1, 1, 1], 0.2, 1),  # 4 * 0.2 < 1: everyone weighs the smallest
        ([1000, 10, 10], 1.0, None),  # plain FedAvg
    ],
)
def test_weight_cap_trims_the_largest_to_the_share(
    counts: list[int], share: float, cap: int | None
) -> None:
    assert weight_cap(counts, share) == cap


@given(
    st.lists(st.integers(min_value=1, max_value=10_000_000), min_size=1, max_size=30),
    st.sampled_from([0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.75]),
)
def test_no_capped_share_exceeds_the_cap_and_small_ones_keep_their_counts(
    counts: list[int], share: float
) -> None:
    cap = weight_cap(counts, share)
    weights = counts if cap is None else [min(c, cap) for c in counts]
    total = sum(weights)
    feasible = Fraction(share).limit_denominator(1_000_000) * len(counts) >= 1
    if feasible:
        assert all(
            Fraction(w, total) <= Fraction(share).limit_denominator(1_000_000) for w in weights
        )
    else:
        assert len(set(weights)) == 1
    if cap is not None:
        assert all(w == c for w, c in zip(weights, counts, strict=True) if c <= cap)


def test_the_default_cap_is_a_half_and_must_be_a_share() -> None:
    assert load_config().round.max_weight_share == 0.5
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"round\.max_weight_share"):
            load_config(overrides={"round.max_weight_share": bad})


# ---- the registered count ------------------------------------------------------------------


def test_a_claim_is_checked_against_the_rows_reported_before_round_one(tmp_path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path), "test")
    exchange.write_moments(report("site-a", 28))
    exchange.write_moments(report("site-c", 20_000_000))  # over admission.max_num_examples
    exchange.store.put_new(exchange.layout.moments_key("site-d"), b"{not json")
    elsewhere = report("site-a", 5).model_dump_json().encode()  # site-a's, under site-e
    exchange.store.put_new(exchange.layout.moments_key("site-e"), elsewhere)
    exchange.store.put_new(exchange.layout.moments_key("site-f"), b" " * 2000)
    found = read_registered_examples(
        exchange, ["site-a", "site-b", "site-c", "site-d", "site-e", "site-f"], 10_000_000, 1000
    )
    # site-b has no report yet (looked for again later); the others' register nothing
    assert found == {"site-a": 28, "site-c": None, "site-d": None, "site-e": None, "site-f": None}
    registered = {site: rows for site, rows in found.items() if rows is not None}
    check_registered_claim("site-a", 28, registered)  # the same split, counted the same way
    check_registered_claim("site-a", 20, registered)  # fewer rows is no threat
    with pytest.raises(UpdateRejectedError) as over:
        check_registered_claim("site-a", 29, registered)
    assert over.value.reason == "num_examples_exceeds_registered"
    with pytest.raises(UpdateRejectedError) as unknown:
        check_registered_claim("site-b", 1, registered)
    assert unknown.value.reason == "num_examples_unregistered"
    check_registered_claim("site-b", 10**7, {})  # nobody reported: nothing to check against


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"count": [-5.0]}, "out_of_range"),
        ({"count": [28.0, 1.0]}, "shape_mismatch"),  # lists that disagree in length
        ({"total_sq": [-1.0]}, "out_of_range"),
        ({"count": [50.0]}, "out_of_range"),  # more present values than rows
    ],
)
def test_a_report_the_standardisation_refuses_registers_no_rows(
    tmp_path, changes: dict[str, list[float]], reason: str
) -> None:
    """Reports that parse but are impossible must not count: they would raise the cap."""
    exchange = Exchange(LocalDirectoryStore(tmp_path), "test")
    hostile = MomentsReport(**{**report("site-a", 28).model_dump(), **changes})
    exchange.store.put_new(
        exchange.layout.moments_key("site-a"), hostile.model_dump_json().encode()
    )
    exchange.store.put_new(exchange.layout.moments_key("site-z"), b'{"count": [1e999]}')
    assert read_registered_examples(exchange, ["site-a", "site-z"], 10_000_000, 10_000) == {
        "site-a": None,
        "site-z": None,
    }


# ---- in the round loop ------------------------------------------------------------------


class Claims(Script):
    """Every site reports ``rows`` before round 1 and answers claiming ``claims`` (default:
    its rows), honest weights otherwise."""

    def __init__(self, exchange: Exchange, rows: dict[str, int], claims: dict[str, int]):
        super().__init__(exchange, SITES)
        self.rows = rows
        self.claims = claims
        for site, count in rows.items():
            exchange.write_moments(report(site, count))

    def round_opened(self, manifest: GlobalManifest) -> None:
        if self.exchange.list_answered_sites(manifest.round_index):
            return
        for site in self.sites:
            claim = self.claims.get(site, self.rows.get(site, 10))
            update = manifest_for(manifest, site, num_examples=claim)
            data = None
            if manifest.task == "train":
                data = signed(honest_weights(site, manifest.round_index), update)
            self.exchange.write_update(update, data)


def fedavg(weights: dict[str, int]) -> dict[str, np.ndarray]:
    return weighted_mean([(honest_weights(s, 1), n) for s, n in weights.items()])


def assert_model(exchange: Exchange, expected: dict[str, np.ndarray]) -> None:
    model = final_model(exchange, make_config())
    for name, value in expected.items():
        np.testing.assert_allclose(model[name], value, rtol=1e-6)


ROWS = {"site-a": 10, "site-b": 20, "site-c": 30, "site-d": 40}


def test_an_overclaim_is_refused_and_the_model_is_fedavg_of_the_rest(tmp_path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    events = Claims(exchange, ROWS, {"site-d": 10_000_000})
    run_loop(tmp_path, make_config(), events)
    result = exchange.read_result(1)
    assert result is not None
    assert [(d.site_id, d.reason) for d in result.rejected] == [
        ("site-d", "num_examples_exceeds_registered")
    ]
    assert result.capped_weights == {}
    assert_model(exchange, fedavg({s: n for s, n in ROWS.items() if s != "site-d"}))


def test_a_hospital_that_never_reported_cannot_train_where_the_others_did(tmp_path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    rows = {s: n for s, n in ROWS.items() if s != "site-c"}
    run_loop(tmp_path, make_config(), Claims(exchange, rows, {"site-c": 30}))
    result = exchange.read_result(1)
    assert result is not None
    assert [(d.site_id, d.reason) for d in result.rejected] == [
        ("site-c", "num_examples_unregistered")
    ]


def test_the_largest_hospital_is_capped_at_the_share_and_named(tmp_path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    rows = {**ROWS, "site-d": 400}  # honest, and more than the other three together
    run_loop(tmp_path, make_config(), Claims(exchange, rows, {}))
    result = exchange.read_result(1)
    assert result is not None and len(result.accepted) == 4
    assert result.capped_weights == {"site-d": 60}  # 10 + 20 + 30: exactly half of 120
    assert [d.num_examples for d in result.accepted if d.site_id == "site-d"] == [400]
    assert_model(exchange, fedavg({**ROWS, "site-d": 60}))


def test_plain_fedavg_where_the_cap_is_one(tmp_path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    rows = {**ROWS, "site-d": 400}
    config = make_config(**{"round.max_weight_share": 1.0})
    run_loop(tmp_path, config, Claims(exchange, rows, {}))
    result = exchange.read_result(1)
    assert result is not None and result.capped_weights == {}
    assert_model(exchange, fedavg(rows))


def test_a_restart_re_aggregates_with_the_weights_the_result_records(tmp_path) -> None:
    """site-c never answers and reports its rows only after round 1 closed, so a fresh
    open would now cap site-d at 60; the restarted loop must rebuild the recorded model."""
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    rows = {"site-a": 10, "site-b": 20, "site-d": 400}

    class Silent(Claims):
        def __init__(self, exchange: Exchange, rows: dict[str, int]) -> None:
            super().__init__(exchange, rows, {})
            self.sites = [s for s in SITES if s != "site-c"]

    class CrashOnClose(Silent):
        def round_closed(self, result) -> None:
            raise Crash()

    config = make_config()
    with pytest.raises(Crash):
        run_loop(tmp_path, config, CrashOnClose(exchange, rows))
    first = exchange.read_result(1)
    assert first is not None and first.missing == ["site-c"]
    assert first.capped_weights == {"site-d": 30}
    exchange.write_moments(report("site-c", 30))  # late: a fresh cap would be 60
    run_loop(tmp_path, config, Silent(exchange, {}), owner="agg-2")
    assert exchange.read_result(1) == first
    assert_model(exchange, fedavg({"site-a": 10, "site-b": 20, "site-d": 30}))
