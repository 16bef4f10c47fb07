"""The aggregator's round loop, end to end, with files in the exchange that would kill an
unguarded loop: each hostile answer is a rejection with a named reason in ``result.json`` and the
ledger, a malformed preflight report is skipped, and a restart goes on the same way."""

from __future__ import annotations

import numpy as np

from fedsilo.testing.manifests import answer_to
from fl_core.admission import update_metadata
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest, Registration
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import encode_weights
from fl_server.round_events import RoundEvents
from tests.hostile import nested, safetensors_bytes
from tests.offline_round import run_offline

HONEST = ["site-a", "site-b"]
INITIAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}
HOSTILE_HEADERS = {
    "bad-deep": b'{"__metadata__": ' + nested(5000) + b"}",  # RecursionError
    "bad-inf": b'{"w": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 24]}}',
    "bad-digits": b'{"b": {"dtype": "F32", "shape": [' + b"9" * 5000 + b"]}}",
    "bad-text": b'{"__metadata__": {"fedsilo.manifest": "\\ud800"}, '
    b'"b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
    b'"w": {"dtype": "F32", "shape": [3, 2], "data_offsets": [8, 32]}}',
}
SITES = [*HONEST, *HOSTILE_HEADERS]


class Hospitals(RoundEvents):
    """Two honest answers and the hostile files, written as each round opens."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def round_opened(self, manifest: GlobalManifest) -> None:
        store, layout, r = self.exchange.store, self.exchange.layout, manifest.round_index
        if self.exchange.list_answered_sites(r):
            return  # a restart: the answers are there
        for site in HONEST:
            update = answer_to(manifest, site)
            weights = {name: np.ones_like(a) for name, a in INITIAL.items()}
            self.exchange.write_update(update, encode_weights(weights, update_metadata(update)))
        for site, header in HOSTILE_HEADERS.items():
            store.put_new(layout.update_weights_key(r, site), safetensors_bytes(header, bytes(32)))


def run(exchange: Exchange) -> str:
    return run_offline(exchange, SITES, INITIAL, Hospitals(exchange))


def test_the_files_that_killed_the_aggregator_are_rejections_with_reasons(tmp_path) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange", durable=False), "test")
    # a hospital still onboarding wrote a report that is not one: exit 4 at every start
    exchange.write_registration(
        Registration(site_id="site-p", joined_unix=0.0, status="pending"), None
    )
    exchange.store.put_new(exchange.layout.preflight_key("site-p", "x"), b'{"checks": [' * 50)
    assert run(exchange) == "done"
    result = exchange.read_result(1)
    assert result is not None
    assert sorted(d.site_id for d in result.accepted) == HONEST
    reasons = {d.site_id: d.reason for d in result.rejected}
    assert reasons == dict.fromkeys(HOSTILE_HEADERS, "malformed_header")
    ledger = exchange.read_ledger_entry(1)
    assert ledger is not None and sorted(ledger.rejected) == sorted(reasons.items())
    preflight = exchange.layout.preflight_key("site-p", "x")
    assert exchange.skipped[preflight].reason == "malformed_preflight"
    assert run(exchange) == "done"  # restarted with every file still there
