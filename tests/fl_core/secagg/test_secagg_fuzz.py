"""Secure aggregation documents a hospital writes (advert, unmask answer) as the aggregator
reads them: a valid document, or a rejection with a named reason, never an exception that
stops the round."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_client.secagg_client import build_advert
from fl_core.config import load_config
from fl_core.errors import UpdateRejectedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.protocol import Exchange
from fl_core.secagg import masking, shamir, transport
from fl_core.secagg.field import fractional_bits_for
from fl_core.secagg.messages import RosterEntry, SecAggAdvert, SecAggRoster, SecAggUnmaskAnswer
from fl_core.secagg.unmasking import reconstruct_checked
from fl_server.aggregator import FedAvgAggregator
from fl_server.secagg_server import SecureAggregation
from tests.hostile import FUZZ, dumps, hostile_documents, only_named_rejections

SITES = ["site-a", "site-b", "site-c"]
CONFIG = load_config(
    overrides={"federation_id": "sa", "privacy.secagg.enabled": True, "data.synthetic.hospitals": 3}
)
KEYS = {s: masking.load_private(bytes([i + 1]) * 32) for i, s in enumerate(SITES)}
ROSTER = SecAggRoster(
    federation_id="sa",
    round_index=1,
    global_sha256="0" * 64,
    sites=[RosterEntry(site_id=s, public_key=masking.public_bytes(KEYS[s]).hex()) for s in SITES],
    threshold=2,
    modulus_bits=64,
    fractional_bits=fractional_bits_for(64, 4.0, 1000, len(SITES)),
    clip=4.0,
    max_weight=1000,
)
ADVERT = transport.dump(build_advert("site-b", KEYS["site-b"], ROSTER)[0])
ANSWER = transport.dump(
    SecAggUnmaskAnswer(
        federation_id="sa",
        site_id="site-b",
        round_index=1,
        request_sha256="2" * 64,
        self_mask_shares={"site-a": "ab" * 66},
        mask_key_shares={"site-c": "cd" * 66},
    )
)
SECAGG_REASONS = frozenset({"malformed_secagg", "too_large"})
LOW_ORDER_POINT = bytes(32)


@FUZZ
@given(hostile_documents(ANSWER))
def test_hostile_unmask_answers(data: bytes) -> None:
    with only_named_rejections(SECAGG_REASONS):
        answer = transport.parse_from_site(data, SecAggUnmaskAnswer, 64 * 1024)
        for share in [*answer.self_mask_shares.values(), *answer.mask_key_shares.values()]:
            assert len(bytes.fromhex(share)) == shamir.SHARE_BYTES


@FUZZ
@given(hostile_documents(ADVERT))
def test_hostile_adverts_as_the_aggregator_reads_them(data: bytes) -> None:
    """Through ``SecureAggregation._valid_advert``: the site is a participant or it is not."""
    with tempfile.TemporaryDirectory() as root:
        exchange = Exchange(LocalDirectoryStore(Path(root), durable=False), "sa")
        key = exchange.layout.secagg_update_key(1, "site-b", "advert")
        exchange.store.put_new(key, data)
        advert = _advert_of_site_b(exchange)
    if advert is not None:  # every participant's mask key agrees a pair seed with the others
        public = bytes.fromhex(advert.mask_public_key)
        masking.pair_seed(KEYS["site-a"], public, "sa", 1, "site-a", "site-b")


@FUZZ
@given(
    st.lists(st.binary(min_size=66, max_size=66), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=4),
)
def test_hostile_shares_never_stop_the_reconstruction(values: list[bytes], threshold: int) -> None:
    shares = []
    for x, value in enumerate(values, start=1):
        try:
            shares.append(shamir.Share.from_bytes(x, value))
        except ValueError:
            continue  # what reconstruct_material reports and skips
    secret = reconstruct_checked(
        shares,
        threshold,
        lambda raw: masking.public_bytes(masking.load_private(raw)).hex(),
        "00" * 32,
    )
    assert secret is None or len(secret) == 32


def _advert_of_site_b(exchange: Exchange) -> SecAggAdvert | None:
    """What the aggregator's secure aggregation phase makes of site-b's advert."""
    return SecureAggregation(exchange, CONFIG, FedAvgAggregator())._valid_advert("site-b", ROSTER)


def test_a_low_order_mask_key_is_refused_when_the_advert_is_read() -> None:
    """Accepted before, it made the aggregator's unmasking of any dropped site raise
    ``ValueError`` (and every other hospital's pair masks)."""
    with pytest.raises(ValueError, match="shared key"):
        masking.pair_seed(KEYS["site-a"], LOW_ORDER_POINT, "sa", 1, "site-a", "site-b")
    document = SecAggAdvert.model_validate_json(ADVERT).model_dump(mode="json")
    document["mask_public_key"] = LOW_ORDER_POINT.hex()
    with pytest.raises(UpdateRejectedError) as rejected:
        transport.parse_from_site(dumps(document), SecAggAdvert, 64 * 1024)
    assert rejected.value.reason == "malformed_secagg"
    assert "low-order" in rejected.value.detail


def test_an_advert_too_large_is_refused_before_it_is_read() -> None:
    with tempfile.TemporaryDirectory() as root:
        exchange = Exchange(LocalDirectoryStore(Path(root), durable=False), "sa")
        key = exchange.layout.secagg_update_key(1, "site-b", "advert")
        exchange.store.put_new(key, ADVERT[:-1] + b" " * (1 << 20) + b"}")
        with pytest.raises(UpdateRejectedError) as rejected:
            transport.read_from_site(exchange, key, SecAggAdvert, 64 * 1024)
        assert rejected.value.reason == "too_large"
        assert _advert_of_site_b(exchange) is None


def test_an_honest_advert_is_read() -> None:
    with tempfile.TemporaryDirectory() as root:
        exchange = Exchange(LocalDirectoryStore(Path(root), durable=False), "sa")
        exchange.store.put_new(exchange.layout.secagg_update_key(1, "site-b", "advert"), ADVERT)
        advert = _advert_of_site_b(exchange)
    assert advert == SecAggAdvert.model_validate_json(ADVERT)
