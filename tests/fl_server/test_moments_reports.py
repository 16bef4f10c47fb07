"""Each hospital's moments report is parsed and checked once per aggregator process, read in
one request, and refused for the same reason whichever reader meets it first."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from botocore.awsrequest import AWSPreparedRequest

from fedsilo.testing.manifests import admission_context, update_manifest
from fedsilo.testing.moto_s3 import create_bucket, moto_client
from fl_client.moments import moments_report, publish_moments
from fl_core.errors import UpdateRejectedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.s3_store import S3Store
from fl_server.answer_checks import check_answer
from fl_server.moments import check_moments, check_report_once, gather_moments, max_report_bytes
from fl_server.moments_reports import CHECKED_REPORTS
from fl_server.weight_bounds import RegisteredRows
from tests.fl_server._moments_harness import config, fake_clock, site_data

FEATURES = 3
MAX_EXAMPLES = 10_000
SITES = [f"site-{i:03d}" for i in range(12)]


@pytest.fixture(autouse=True)
def nothing_checked_yet() -> Iterator[None]:
    """Each test starts from a process that has checked no report."""
    CHECKED_REPORTS.clear()
    yield
    CHECKED_REPORTS.clear()


class CountRequests:
    """A ``before-send`` hook: the S3 requests the aggregator's client makes, by method."""

    def __init__(self) -> None:
        self.made: Counter[str] = Counter()

    def __call__(self, request: AWSPreparedRequest, **_: object) -> None:
        self.made[request.method or "?"] += 1


def s3_exchange(endpoint: str) -> tuple[Exchange, CountRequests]:
    client = moto_client(endpoint)
    store = S3Store(create_bucket(client), client=client)
    counted = CountRequests()
    store.client.meta.events.register("before-send.s3", counted)
    return Exchange(store, "test"), counted


def before_round_one(exchange: Exchange, sites: list[str]) -> dict[str, int]:
    """What the aggregator does with the reports before round 1, as ``fedsilo server run``
    does it: the standardisation, then the rows each site registered (``RoundLoop``'s
    bounds, from the same config). Returns those rows."""
    clock, sleep = fake_clock()
    startup = config(**{"data.synthetic.hospitals": len(sites)})
    gathered = gather_moments(exchange, sites, FEATURES, startup, clock=clock, sleep=sleep)
    assert len(gathered) == len(sites)
    admission = startup.admission
    rows = RegisteredRows(exchange, admission.max_num_examples, admission.max_manifest_bytes)
    return rows.of(sites)


def test_the_aggregator_checks_each_report_once_and_reads_it_in_one_request(
    moto_server: str,
) -> None:
    exchange, counted = s3_exchange(moto_server)
    for i, site in enumerate(SITES):
        publish_moments(exchange, site_data(site, 20 + i, i))
    counted.made.clear()
    registered = before_round_one(exchange, SITES)
    assert registered == {site: 20 + i for i, site in enumerate(SITES)}
    assert CHECKED_REPORTS.checks == len(SITES)  # not once per reader
    # one GET per report per reader; no HEAD before it (two requests each before)
    assert counted.made == Counter({"GET": 2 * len(SITES)})


def report_bytes(site_id: str = "site-a", **changes: object) -> bytes:
    document = moments_report("test", site_data(site_id, 20, 0)).model_dump(mode="json")
    document.update(changes)
    return json.dumps(document).encode()


def test_a_report_is_checked_again_unless_it_is_the_same_bytes_site_federation_and_bound() -> None:
    data = report_bytes()
    assert check_report_once(data, "site-a", "test", FEATURES, MAX_EXAMPLES)[0] == 20
    assert check_report_once(data, "site-a", "test", None, MAX_EXAMPLES)[0] == 20
    assert CHECKED_REPORTS.checks == 1
    changed = data.replace(b'"num_examples": 20', b'"num_examples":  20')  # same document
    assert changed != data
    assert check_report_once(changed, "site-a", "test", FEATURES, MAX_EXAMPLES)[0] == 20
    assert CHECKED_REPORTS.checks == 2
    with pytest.raises(UpdateRejectedError) as elsewhere:  # the same bytes under another site
        check_report_once(data, "site-b", "test", FEATURES, MAX_EXAMPLES)
    assert elsewhere.value.reason == "site_mismatch"
    with pytest.raises(UpdateRejectedError) as bounded:  # a tighter bound on the rows
        check_report_once(data, "site-a", "test", FEATURES, 19)
    assert bounded.value.reason == "too_large"
    assert CHECKED_REPORTS.checks == 4


HONEST_PROFILE = moments_report("test", site_data("site-a", 20, 0)).model_dump(mode="json")[
    "profile"
]

HOSTILE = {
    "lists_disagree": {"count": [1.0, 2.0]},
    "lists_agree_not_the_model": {"count": [1.0, 2.0], "total": [1.0, 1.0], "total_sq": [9, 9]},
    "short_and_nan": {"count": [1.0, 2.0], "total": [float("nan"), 1.0], "total_sq": [9, 9]},
    "nan": {"total": [float("nan"), 0.0, 0.0]},
    "negative_count": {"count": [-1.0, 0.0, 0.0]},
    "count_over_rows": {"count": [500.0, 0.0, 0.0]},
    "below_cauchy_schwarz": {"total_sq": [0.0, 0.0, 0.0], "total": [50.0, 50.0, 50.0]},
    "another_site": {"site_id": "site-b"},
    "another_federation": {"federation_id": "other"},
    "not_a_list": {"count": "many"},
    "too_many_rows": {"num_examples": MAX_EXAMPLES + 1},
    "profile_of_two_features": {
        "profile": {**HONEST_PROFILE, "features": HONEST_PROFILE["features"][:2]}
    },
    "profile_not_a_profile": {"profile": {"features": "none"}},
    "padded_past_the_limit": {"padding": " " * max_report_bytes(FEATURES)},
}


def refusal(
    check: Callable[..., object], data: bytes, num_features: int | None
) -> tuple[str, str] | None:
    try:
        check(data, "site-a", "test", num_features, MAX_EXAMPLES)
    except UpdateRejectedError as rejected:
        return rejected.reason, rejected.detail
    return None


@pytest.mark.parametrize("changes", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("first", [FEATURES, None], ids=["standardisation", "weight-bounds"])
def test_a_hostile_report_is_refused_for_the_same_reason_checked_or_served(
    changes: dict[str, object], first: int | None
) -> None:
    """Served from what one reader found, the other reader's refusal is the one a full check
    (``check_moments``, nothing kept) gives, reason and detail."""
    data = report_bytes(**changes)
    order = (first, None if first is not None else FEATURES)
    full = {num_features: refusal(check_moments, data, num_features) for num_features in order}
    assert full[FEATURES] is not None  # the standardisation refuses every one of them
    served = {
        num_features: refusal(check_report_once, data, num_features) for num_features in order
    }
    assert served == full
    assert CHECKED_REPORTS.checks <= 1  # the padded one is refused by its size, unparsed


def test_an_oversized_report_is_refused_from_its_size_in_one_request(moto_server: str) -> None:
    exchange, counted = s3_exchange(moto_server)
    publish_moments(exchange, site_data("site-a", 20, 0))
    startup = config(**{"round.min_sites": 1})
    limit = max(max_report_bytes(FEATURES), startup.admission.max_manifest_bytes)
    honest = report_bytes("site-b")  # but for the spaces before its last brace
    huge = honest[:-1] + b" " * limit + b"}"
    exchange.store.put_new(exchange.layout.moments_key("site-b"), huge)
    counted.made.clear()
    clock, sleep = fake_clock()
    gathered = gather_moments(exchange, ["site-a", "site-b"], FEATURES, startup, clock, sleep)
    assert len(gathered) == 1
    admission = startup.admission
    rows = RegisteredRows(exchange, admission.max_num_examples, admission.max_manifest_bytes)
    assert rows.of(["site-a", "site-b"]) == {"site-a": 20}
    assert counted.made == Counter({"GET": 4})
    assert CHECKED_REPORTS.checks == 1  # site-b's was never parsed


def test_an_oversized_manifest_is_refused_too_large_with_its_size_in_one_request(
    moto_server: str,
) -> None:
    exchange, counted = s3_exchange(moto_server)
    context = admission_context(federation_id="test", task="evaluate", max_manifest_bytes=4096)
    manifest = update_manifest(federation_id="test", task="evaluate", train_loss=None)
    padded = manifest.model_dump_json(indent=4096).encode()
    key = exchange.layout.update_manifest_key(context.round_index, "site-a")
    exchange.store.put_new(key, padded)
    counted.made.clear()
    with pytest.raises(UpdateRejectedError) as refused:
        check_answer(exchange, context, {}, 10, "site-a")
    assert (refused.value.reason, refused.value.detail) == (
        "too_large",
        f"manifest is {len(padded)} bytes",
    )
    assert counted.made == Counter({"GET": 1})


def test_an_evaluation_answer_is_admitted_in_one_request(tmp_path, moto_server: str) -> None:
    exchange, counted = s3_exchange(moto_server)
    context = admission_context(federation_id="test", task="evaluate")
    manifest = update_manifest(federation_id="test", task="evaluate", train_loss=None)
    exchange.write_update(manifest, None)
    counted.made.clear()
    checked = check_answer(exchange, context, {}, 10, "site-a")
    assert checked.manifest == manifest and checked.update is None
    assert counted.made == Counter({"GET": 1})
    local = Exchange(LocalDirectoryStore(tmp_path), "test")  # a folder: the same answer
    local.write_update(manifest, None)
    assert check_answer(local, context, {}, 10, "site-a").manifest == manifest
