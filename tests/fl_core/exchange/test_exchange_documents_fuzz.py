"""Preflight reports and registrations as the aggregator reads them: a malformed one is
skipped and shown (``Exchange.skipped``), never fatal to whoever lists them."""

from __future__ import annotations

import struct
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fedsilo.ops.status import read_update_manifest
from fedsilo.testing.manifests import update_manifest
from fl_core.admission import update_metadata
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import PreflightCheck, PreflightReport, Registration
from fl_core.exchange.protocol import MAX_PREFLIGHT_BYTES, Exchange, _dump
from fl_core.exchange.registry import activate_verified_sites
from fl_core.serialisation import encode_weights
from tests.hostile import FUZZ, hostile_documents, nested, outcome, safetensors_bytes, splice

PREFLIGHT = _dump(
    PreflightReport(
        federation_id="test",
        site_id="site-x",
        account_id="111111111111",
        checked_unix=20.0,
        checks=[PreflightCheck(name="identity", ok=True, detail="role of site-x")],
    )
)
REGISTRATION = _dump(Registration(site_id="site-x", joined_unix=10.0, status="pending"))
HONEST = Registration(site_id="site-a", joined_unix=10.0, status="active")
UPDATE = encode_weights({"b": np.ones(3, np.float32)}, update_metadata(update_manifest()))
UPDATE_HEADER = UPDATE[8 : 8 + struct.unpack("<Q", UPDATE[:8])[0]]
HOSTILE_VALUES = [b"1e999", b"NaN", b"9" * 5000, b'"\\ud800"', nested(3000), b"[-1]", b"{}"]


def _exchange(root: str) -> Exchange:
    exchange = Exchange(LocalDirectoryStore(Path(root), durable=False), "test")
    exchange.write_registration(HONEST, None)
    return exchange


@FUZZ
@given(hostile_documents(PREFLIGHT))
def test_a_malformed_preflight_report_is_skipped_and_shown(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        exchange = _exchange(root)
        exchange.store.replace(exchange.layout.registry_key("site-x"), REGISTRATION, if_match=None)
        key = exchange.layout.preflight_key("site-x", "hostile")
        exchange.store.put_new(key, data)
        reports = exchange.list_preflights("site-x")
        activated = activate_verified_sites(exchange, now=30.0)
        parsed = outcome(partial(PreflightReport.model_validate_json, data), ValidationError)
        if parsed is None:
            assert reports == []
            assert exchange.skipped[key].reason == "malformed_preflight"
        else:
            assert reports == ([parsed] if parsed.site_id == "site-x" else [])
            assert key not in exchange.skipped
        assert set(activated) <= {"site-x"}


def test_a_preflight_report_of_gigabytes_is_refused_unread() -> None:
    with tempfile.TemporaryDirectory() as root:
        exchange = _exchange(root)
        key = exchange.layout.preflight_key("site-x", "huge")
        exchange.store.put_new(key, PREFLIGHT + b" " * MAX_PREFLIGHT_BYTES)
        assert exchange.list_preflights("site-x") == []
        assert exchange.skipped[key].reason == "too_large"


@FUZZ
@given(hostile_documents(REGISTRATION))
def test_a_malformed_registration_is_skipped_shown_and_admits_nobody(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        exchange = _exchange(root)
        key = exchange.layout.registry_key("site-x")
        exchange.store.replace(key, data, if_match=None)
        found = {r.site_id: r for r in exchange.list_registrations()}
        activate_verified_sites(exchange, now=30.0)
        assert found["site-a"] == HONEST
        parsed = outcome(partial(Registration.model_validate_json, data), ValidationError)
        if parsed is None or parsed.site_id != "site-x":  # under site-x's key, naming another
            assert exchange.skipped[key].reason == "malformed_registration"
            assert found["site-x"].status == "revoked"  # never readmitted by a bad entry
        else:
            assert found[parsed.site_id] == parsed
            assert key not in exchange.skipped
        etag = exchange.store.get_with_etag(key)[1]
        exchange.store.replace(key, REGISTRATION, if_match=etag)  # mended: shown no more
        assert {r.site_id for r in exchange.list_registrations()} == {"site-a", "site-x"}
        assert key not in exchange.skipped


def test_a_malformed_preflight_report_no_longer_stops_activation() -> None:
    """It raised ``ExchangeError`` out of ``activate_verified_sites``: the aggregator exited 4
    at every restart while a hospital still onboarding had a bad report in the exchange."""
    with tempfile.TemporaryDirectory() as root:
        exchange = _exchange(root)
        exchange.store.replace(exchange.layout.registry_key("site-x"), REGISTRATION, None)
        exchange.store.put_new(exchange.layout.preflight_key("site-x", "bad"), b"{not json")
        exchange.store.put_new(exchange.layout.preflight_key("site-x", "good"), PREFLIGHT)
        assert activate_verified_sites(exchange, now=30.0) == ["site-x"]
        bad = exchange.layout.preflight_key("site-x", "bad")
        assert exchange.skipped[bad].reason == "malformed_preflight"


def _update_file(spliced: tuple[int, bytes]) -> bytes:
    return safetensors_bytes(splice(UPDATE_HEADER, spliced[1], spliced[0]), bytes(12))


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.integers(min_value=0), st.sampled_from(HOSTILE_VALUES)).map(_update_file),
        st.just(UPDATE),
    )
)
def test_status_reads_any_update_file_header(data: bytes) -> None:
    """``fedsilo status`` reads the manifest from the header alone: the manifest, or None."""
    with tempfile.TemporaryDirectory() as root:
        exchange = _exchange(root)
        exchange.store.put_new(exchange.layout.update_weights_key(1, "site-x"), data)
        found = read_update_manifest(exchange, 1, "site-x")
    if data == UPDATE:
        assert found == update_manifest()
    else:
        assert found is None or found.site_id == "site-a"
