"""The S3 exchange over moto_server: model round trip and a round of hospitals.

Two measurements, both against a ``ThreadedMotoServer`` on 127.0.0.1 started here:

1. Round trip of a model: ``S3Store.put_new`` (multipart with SHA-256 part checksums and
   ``IfNoneMatch``) then ``S3Store.get`` (parallel ranged GETs, sha256 verified), against raw
   boto3 ``put_object`` / ``get_object().read()`` of the same bytes (the baseline). The two
   run interleaved, ``REPEATS`` times each; the ratio of medians is the figure (the
   goal: within ``GOAL_VS_RAW``). moto_server is in this process, so both sides share its CPU
   cost; the ratio says what fedsilo's integrity and write-once machinery adds.
2. A round of hospitals through the real ``RoundLoop`` over S3 (admission on, as production
   runs it), ``REPEATS`` rounds, each in a fresh bucket: the hospitals' updates are written
   when the round opens, then the aggregator's time is split into transfer (inside store
   calls, via a timing proxy around the store), verification (the admission checks, timed by
   wrapping them) and aggregation (the aggregator's ``add`` / ``finish``). Admission checks
   answers ahead on worker threads, so these are thread-seconds that can overlap; they are
   stages of one round, not alternatives, and that table has no baseline.

No timing is asserted anywhere; the tables are for people.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
import numpy as np
from moto.server import ThreadedMotoServer
from rich.table import Table

import fl_server.answer_checks as answer_checks_module
from bench import _tables, _timing
from fedsilo.engine.logs import configure_logging
from fedsilo.testing.moto_s3 import REGION
from fl_core.admission import update_metadata
from fl_core.config import load_config
from fl_core.exchange.manifests import (
    EvaluationReport,
    GlobalManifest,
    RoundResult,
    ScoreHistogram,
    SparseCounts,
    UpdateManifest,
)
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.s3_store import S3Store
from fl_core.exchange.store import ObjectStore
from fl_core.serialisation import decode_weights, encode_weights
from fl_core.types import ETag, ObjectKey, Weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.round_events import RoundEvents
from fl_server.round_loop import RoundLoop

MB = 1_000_000
BINS = 10
REPEATS = _timing.MIN_REPEATS
GOAL_VS_RAW = 1.2
"""The goal for S3Store's round trip against raw boto3 (a target, not a result)."""
VERIFICATION = ("check_manifest", "check_update_file", "check_weights_size")
"""The admission checks ``RoundLoop`` calls, wrapped to time verification."""


@contextmanager
def _moto_server() -> Iterator[str]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        os.environ[name] = value
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _raw_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


def _new_bucket(endpoint: str) -> str:
    bucket = f"fedsilo-bench-{uuid.uuid4().hex[:10]}"
    _raw_client(endpoint).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return bucket


# ---- 1. model round trip ----------------------------------------------------------------------


def _model_bytes(size_bytes: int) -> bytes:
    rng = np.random.default_rng(0)
    rows = max(1, size_bytes // (4 * 1024))
    return encode_weights({"w": rng.standard_normal((rows, 1024), dtype=np.float32)})


def round_trip(endpoint: str, size_bytes: int, repeats: int) -> Table:
    data = _model_bytes(size_bytes)
    bucket = _new_bucket(endpoint)
    store = S3Store(bucket, "bench", endpoint_url=endpoint, region=REGION)
    raw = _raw_client(endpoint)
    keys = (f"model-{index}.safetensors" for index in itertools.count())

    def with_store() -> tuple[float, float]:
        key = next(keys)
        started = time.perf_counter()
        store.put_new(key, data)
        uploaded = time.perf_counter()
        got = store.get(key)  # ranged parallel GETs, sha256 verified against the metadata
        downloaded = time.perf_counter()
        assert got == data
        return uploaded - started, downloaded - uploaded

    def with_raw() -> tuple[float, float]:
        key = f"raw/{next(keys)}"
        started = time.perf_counter()
        raw.put_object(Bucket=bucket, Key=key, Body=data)
        uploaded = time.perf_counter()
        back = raw.get_object(Bucket=bucket, Key=key)["Body"].read()
        downloaded = time.perf_counter()
        assert back == data
        return uploaded - started, downloaded - uploaded

    names = {"raw": "raw boto3 put/get", "store": "S3Store put_new/get + verify"}
    runs = _timing.interleave({"raw": with_raw, "store": with_store}, repeats)
    totals = {name: [up + down for up, down in found] for name, found in runs.items()}
    table = _timing.new_table(
        f"round trip of a {len(data) / MB:.0f} MB model via moto_server; baseline: {names['raw']}"
    )
    for column in ("path", "upload s median", "download s median", "round trip s min",
                   "round trip s median", "x raw", "MB/s (median)"):  # fmt: skip
        table.add_column(column, justify="right")
    for name, label in names.items():
        cells = _timing.spread_cells(totals[name], totals["raw"], ".2f")
        table.add_row(
            label,
            f"{_timing.Spread.of([up for up, _ in runs[name]]).median:.2f}",
            f"{_timing.Spread.of([down for _, down in runs[name]]).median:.2f}",
            *cells,
            f"{2 * len(data) / MB / _timing.Spread.of(totals[name]).median:.0f}",
        )
    table.caption = "\n".join(
        [
            _timing.method_note(
                repeats, "raw", "round trip: wall seconds of one upload and download"
            ),
            f"Goal: S3Store within {GOAL_VS_RAW:.2f}x of raw. S3Store writes with SHA-256 "
            "checksums, sha256 metadata and IfNoneMatch, reads with ChecksumMode and verifies "
            "the sha256 (single PUT/GET up to 256 MiB, multipart and ranges above); "
            "moto_server runs in this process and shares its cores.",
            _timing.load_note(),
        ]
    )
    return table


# ---- 2. a 50-hospital round -----------------------------------------------------------------


@dataclass
class _Clock:
    """Seconds spent inside timed calls, by bucket, while ``active``."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    active: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Admission runs on worker threads too: the sums must not lose an update."""

    def timed(self, bucket: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return fn(*args, **kwargs)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                with self.lock:
                    self.seconds[bucket] = self.seconds.get(bucket, 0.0) + spent
                    self.calls[bucket] = self.calls.get(bucket, 0) + 1

        return wrapper


class _TimedStore(ObjectStore):
    """Delegates to a store and times every call (bench only)."""

    def __init__(self, inner: ObjectStore, clock: _Clock) -> None:
        self.inner = inner
        self.clock = clock

    def put_new(self, key: ObjectKey, data: bytes, retain_until: datetime | None = None) -> None:
        self.clock.timed("transfer", self.inner.put_new)(key, data, retain_until)

    def get(self, key: ObjectKey) -> bytes:
        result: bytes = self.clock.timed("transfer", self.inner.get)(key)
        return result

    def get_bounded(self, key: ObjectKey, max_bytes: int) -> bytes:
        result: bytes = self.clock.timed("transfer", self.inner.get_bounded)(key, max_bytes)
        return result

    def get_with_etag(self, key: ObjectKey) -> tuple[bytes, ETag]:
        result: tuple[bytes, ETag] = self.clock.timed("transfer", self.inner.get_with_etag)(key)
        return result

    def replace(self, key: ObjectKey, data: bytes, if_match: ETag | None) -> ETag:
        result: ETag = self.clock.timed("transfer", self.inner.replace)(key, data, if_match)
        return result

    def size(self, key: ObjectKey) -> int:
        result: int = self.clock.timed("transfer", self.inner.size)(key)
        return result

    def exists(self, key: ObjectKey) -> bool:
        result: bool = self.clock.timed("transfer", self.inner.exists)(key)
        return result

    def list_keys(self, prefix: str) -> list[ObjectKey]:
        result: list[ObjectKey] = self.clock.timed("transfer", self.inner.list_keys)(prefix)
        return result

    def list_versions(self, prefix: str) -> dict[ObjectKey, str]:
        result: dict[ObjectKey, str] = self.clock.timed("transfer", self.inner.list_versions)(
            prefix
        )
        return result

    def get_head(self, key: ObjectKey, length: int) -> bytes:
        result: bytes = self.clock.timed("transfer", self.inner.get_head)(key, length)
        return result

    def describe(self) -> str:
        return self.inner.describe()


class _TimedAggregator(FedAvgAggregator):
    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.clock = clock

    def add(self, weights: Weights, num_examples: int) -> None:
        self.clock.timed("aggregation", super().add)(weights, num_examples)

    def finish(self) -> Weights:
        result: Weights = self.clock.timed("aggregation", super().finish)()
        return result


class _Hospitals(RoundEvents):
    """Every hospital answers as soon as a round opens (written through its own store)."""

    def __init__(self, store: ObjectStore, federation_id: str, sites: list[str], clock: _Clock):
        self.exchange = Exchange(store, federation_id)
        self.sites = sites
        self.clock = clock
        self.upload_s = 0.0
        self.opened_at = 0.0
        self.closed: dict[int, tuple[float, RoundResult]] = {}

    def round_opened(self, manifest: GlobalManifest) -> None:
        started = time.perf_counter()
        global_weights = decode_weights(self.exchange.read_global_weights(manifest))
        report = EvaluationReport(
            num_examples=10,
            loss_sum=1.0,
            histogram=ScoreHistogram(
                bins=BINS,
                positives=SparseCounts(index=list(range(BINS)), count=[1] * BINS),
                negatives=SparseCounts(index=[], count=[]),
            ),
        )
        for index, site in enumerate(self.sites):
            nonce = secrets.token_hex(16)
            fields: dict[str, Any] = dict(
                federation_id=manifest.federation_id,
                site_id=site,
                round_index=manifest.round_index,
                task="evaluate",
                global_sha256=manifest.sha256,
                num_examples=100 + index,
                nonce=nonce,
                evaluation=report,
            )
            data = None
            if manifest.task == "train":
                fields.update(task="train", train_loss=0.5)
                weights: Weights = {
                    k: np.add(v, np.float32(index)) for k, v in global_weights.items()
                }
                data = encode_weights(weights, update_metadata(UpdateManifest(**fields)))
            self.exchange.write_update(UpdateManifest(**fields), data)
        if manifest.round_index == 1:
            self.upload_s = time.perf_counter() - started
            self.opened_at = time.perf_counter()
            self.clock.active = True

    def round_closed(self, result: RoundResult) -> None:
        self.closed[result.round_index] = (time.perf_counter(), result)
        self.clock.active = False


@dataclass(frozen=True)
class RoundSplit:
    """One measured round: thread-seconds per stage, calls, and the round's wall seconds."""

    seconds: dict[str, float]
    calls: dict[str, int]
    round_s: float
    upload_s: float
    accepted: int
    rejected: int


def run_hospital_round(endpoint: str, hospitals: int, params: int) -> RoundSplit:
    """One round of ``hospitals`` over S3 in a fresh bucket, its stages timed."""
    clock = _Clock()
    originals = {name: getattr(answer_checks_module, name) for name in VERIFICATION}
    for name, fn in originals.items():
        setattr(answer_checks_module, name, clock.timed("verification", fn))
    try:
        bucket = _new_bucket(endpoint)
        sites = [f"site-{i:03d}" for i in range(1, hospitals + 1)]
        config = load_config(
            overrides={
                "federation_id": "bench",
                "rounds": 1,
                "evaluation.histogram_bins": BINS,
                "round.min_sites": 2,
                "round.poll_interval_s": 0.05,
                "admission.max_update_bytes": 8 * params + 1_000_000,
            }
        )
        aggregator_store = _TimedStore(
            S3Store(bucket, "bench", endpoint_url=endpoint, region=REGION), clock
        )
        hospital_store = S3Store(bucket, "bench", endpoint_url=endpoint, region=REGION)
        hospitals_events = _Hospitals(hospital_store, "bench", sites, clock)
        side = int(np.sqrt(params))
        initial: Weights = {
            "w": np.zeros((side, side), np.float32),
            "b": np.zeros(side, np.float32),
        }
        loop = RoundLoop(
            Exchange(aggregator_store, "bench"),
            _TimedAggregator(clock),
            config,
            sites,
            initial_weights=initial,
            events=hospitals_events,
        )
        loop.run()
    finally:
        for name, fn in originals.items():
            setattr(answer_checks_module, name, fn)
    closed_at, result = hospitals_events.closed[1]
    return RoundSplit(
        dict(clock.seconds),
        dict(clock.calls),
        closed_at - hospitals_events.opened_at,
        hospitals_events.upload_s,
        len(result.accepted),
        len(result.rejected),
    )


def hospital_round(endpoint: str, hospitals: int, params: int, repeats: int) -> Table:
    runs = _timing.interleave(
        {"round": lambda: run_hospital_round(endpoint, hospitals, params)}, repeats
    )
    rounds = runs["round"]
    side = int(np.sqrt(params))
    update_mb = (4 * side * side + 4 * side) / MB
    table = _timing.new_table(
        f"one round of {hospitals} hospitals over moto_server, {update_mb:.1f} MB updates "
        "(aggregator side); no baseline (stages of one round)"
    )
    for column in ("stage", "seconds min", "seconds median", "median / round median", "calls"):
        table.add_column(column, justify="right")
    round_s = _timing.Spread.of([run.round_s for run in rounds])
    for stage in ("transfer", "verification", "aggregation"):
        spread = _timing.Spread.of([run.seconds.get(stage, 0.0) for run in rounds])
        table.add_row(
            stage,
            f"{spread.min:.2f}",
            f"{spread.median:.2f}",
            f"{spread.over(round_s):.0%}",
            str(rounds[-1].calls.get(stage, "")),
        )
    table.add_row(
        "round (all answers in -> result.json)",
        f"{round_s.min:.2f}",
        f"{round_s.median:.2f}",
        "100%",
        "",
    )
    uploads = _timing.Spread.of([run.upload_s for run in rounds])
    table.caption = "\n".join(
        [
            f"{repeats} rounds, one after the other, each in a fresh bucket; min and median "
            "over the rounds. Stages are thread-seconds inside timed calls: admission reads "
            "and checks answers ahead on worker threads, so stages overlap and can add up to "
            "more than the round.",
            f"accepted {rounds[-1].accepted}, rejected {rounds[-1].rejected} (last round); the "
            f"hospitals' {hospitals} uploads took {uploads.median:.2f} s (median) before each "
            "round was timed.",
            _timing.load_note(),
        ]
    )
    return table


def main(quick: bool) -> None:
    configure_logging("console", "WARNING")  # the round loop's per-update lines are noise here
    console = _timing.table_console()
    with _moto_server() as endpoint:
        size = 20 * MB if quick else 100 * MB
        tables = [round_trip(endpoint, size, REPEATS)]
        console.print(tables[0])
        hospitals, params = (10, 250_000) if quick else (50, 1_000_000)
        tables.append(hospital_round(endpoint, hospitals, params, REPEATS))
        console.print(tables[1])
    _tables.write_tables("s3_bench", tables)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
