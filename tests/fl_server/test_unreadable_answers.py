"""An answer the aggregator may not read rejects that hospital for the round; it never halts.

Over S3 (moto_server) a hospital's answer is refused as S3 refuses an SSE-C object read
without its key, or one under a KMS key of the hospital's own (moto serves both to anyone,
so the refusal is injected on the aggregator's own client, see
``tests/fl_core/exchange/test_unreadable_objects.py``); over a local folder the file has mode 000.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse

from fedsilo.testing.moto_s3 import create_bucket, moto_client
from fedsilo.testing.s3_faults import KMS_MESSAGE, SSE_C_MESSAGE, refusal
from fl_client.moments import publish_moments
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.s3_store import S3Store
from fl_core.serialisation import decode_weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.moments import gather_moments
from fl_server.round_loop import RoundLoop
from fl_server.weight_bounds import read_registered_examples
from tests.fl_server._moments_harness import SITES as MOMENTS_SITES
from tests.fl_server._moments_harness import config as moments_config
from tests.fl_server._moments_harness import fake_clock, site_data
from tests.fl_server._round_harness import (
    INITIAL,
    SITES,
    FakeTime,
    Script,
    expected_model,
    make_config,
)

VICTIM = "site-b"
"""The hospital whose answer cannot be read (it wrote it so, or its key is its own)."""


class RefuseReads:
    """A ``before-send`` hook: S3's refusal for every read of one site's update objects."""

    def __init__(self, site_id: str, status: int, code: str, message: str) -> None:
        self.marker = f"/updates/{site_id}."
        self.respond = refusal(status, code, message)
        self.refused = 0

    def __call__(self, request: AWSPreparedRequest, **_: object) -> AWSResponse | None:
        if request.method in ("GET", "HEAD") and self.marker in request.url:
            self.refused += 1
            return self.respond(request)
        return None


def run_rounds(exchange: Exchange, events: Script) -> None:
    fake = FakeTime()
    loop = RoundLoop(
        exchange,
        FedAvgAggregator(),
        make_config(rounds=2),
        SITES,
        initial_weights=INITIAL,
        events=events,
        clock=fake.clock,
        sleep=fake.sleep,
        owner_id="agg-1",
    )
    assert loop.run().phase == "done"


def assert_victim_rejected_every_round(exchange: Exchange) -> None:
    honest = [s for s in SITES if s != VICTIM]
    for round_index in (1, 2, 3):
        result = exchange.read_result(round_index)
        assert result is not None
        assert [(d.site_id, d.reason) for d in result.rejected] == [(VICTIM, "unreadable")]
        assert sorted(d.site_id for d in result.accepted) == sorted(honest)
        ledger = exchange.read_ledger_entry(round_index)
        assert ledger is not None and [VICTIM, "unreadable"] in [list(r) for r in ledger.rejected]
    manifest = exchange.read_global_manifest(2)
    assert manifest is not None
    model = decode_weights(exchange.read_global_weights(manifest))
    for name, value in expected_model(honest).items():  # FedAvg of the readable answers
        np.testing.assert_allclose(model[name], value, rtol=1e-6)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [(400, "InvalidRequest", SSE_C_MESSAGE), (403, "AccessDenied", KMS_MESSAGE)],
    ids=["sse-c", "hospital-kms-key"],
)
def test_an_answer_s3_refuses_to_hand_over_rejects_only_that_hospital(
    moto_server: str, status: int, code: str, message: str
) -> None:
    client = moto_client(moto_server)
    store = S3Store(create_bucket(client), client=client)
    refuse = RefuseReads(VICTIM, status, code, message)
    store.client.meta.events.register("before-send.s3", refuse)
    exchange = Exchange(store, "test")
    run_rounds(exchange, Script(exchange, SITES))
    assert refuse.refused >= 3
    assert_victim_rejected_every_round(exchange)


class LockedAnswers(Script):
    """Answers every round; the victim's answer file is then left without read permission."""

    def round_opened(self, manifest: GlobalManifest) -> None:
        super().round_opened(manifest)
        layout = self.exchange.layout
        for key in (
            layout.update_weights_key(manifest.round_index, VICTIM),
            layout.update_manifest_key(manifest.round_index, VICTIM),
        ):
            path = Path(self.exchange.store.describe().removeprefix("file://")) / key
            if path.exists():
                path.chmod(0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_a_local_answer_without_read_permission_rejects_only_that_hospital(
    tmp_path: Path,
) -> None:
    exchange = Exchange(LocalDirectoryStore(tmp_path / "exchange"), "test")
    run_rounds(exchange, LockedAnswers(exchange, SITES))
    assert_victim_rejected_every_round(exchange)


def test_a_moments_report_s3_refuses_to_hand_over_leaves_out_only_that_hospital(
    moto_server: str,
) -> None:
    """Before round 1 too: an SSE-C report is that hospital's rejection, not the end."""
    client = moto_client(moto_server)
    store = S3Store(create_bucket(client), client=client)
    exchange = Exchange(store, "test")
    for i, site in enumerate(MOMENTS_SITES):
        publish_moments(exchange, site_data(site, 30, i))
    refuse = RefuseReads(VICTIM, 400, "InvalidRequest", SSE_C_MESSAGE)
    store.client.meta.events.register("before-send.s3", refuse)
    clock, sleep = fake_clock()
    gathered = gather_moments(
        exchange, MOMENTS_SITES, 3, moments_config(), clock=clock, sleep=sleep
    )
    assert len(gathered) == len(MOMENTS_SITES) - 1
    assert refuse.refused >= 1
    assert clock() < 10.0  # refused is an answer: nobody waits for the deadline
    # and the round loop registers nothing for it: its training answers will be refused
    rows = read_registered_examples(exchange, MOMENTS_SITES, 10_000_000, 1 << 20)
    assert rows[VICTIM] is None and all(rows[s] == 30 for s in MOMENTS_SITES if s != VICTIM)
