"""A hospital refuses secure aggregation documents that would let it be unmasked."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_client.secagg_client import (
    answer_unmask,
    build_advert,
    build_answer,
    check_roster,
)
from fl_core.config import load_config
from fl_core.errors import SecAggRefusedError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest
from fl_core.exchange.protocol import Exchange
from fl_core.secagg import masking, transport
from fl_core.secagg.field import fractional_bits_for
from fl_core.secagg.messages import (
    RosterEntry,
    SecAggAdvert,
    SecAggRoster,
    SecAggSetup,
    SecAggUnmaskAnswer,
    SecAggUnmaskRequest,
)

SITES = ["site-a", "site-b", "site-c", "site-d"]
CONFIG = load_config(
    overrides={"federation_id": "sa", "privacy.secagg.enabled": True, "data.synthetic.hospitals": 4}
)
MAX_WEIGHT = CONFIG.admission.max_num_examples


def _roster(keys: dict[str, masking.X25519PrivateKey], threshold: int = 3) -> SecAggRoster:
    return SecAggRoster(
        federation_id="sa",
        round_index=1,
        global_sha256="0" * 64,
        sites=[
            RosterEntry(site_id=s, public_key=masking.public_bytes(keys[s]).hex()) for s in SITES
        ],
        threshold=threshold,
        modulus_bits=64,
        fractional_bits=fractional_bits_for(64, 4.0, MAX_WEIGHT, len(SITES)),
        clip=4.0,
        max_weight=MAX_WEIGHT,
    )


@pytest.fixture
def protocol() -> tuple[
    dict[str, masking.X25519PrivateKey], SecAggRoster, dict[str, SecAggAdvert], SecAggSetup
]:
    keys = {s: masking.new_private_key() for s in SITES}
    roster = _roster(keys)
    adverts = {s: build_advert(s, keys[s], roster)[0] for s in SITES}
    setup = SecAggSetup(
        federation_id="sa",
        round_index=1,
        roster_sha256=transport.digest(roster),
        participants={s: a.mask_public_key for s, a in adverts.items()},
    )
    return keys, roster, adverts, setup


def _request(
    setup: SecAggSetup, adverts: dict[str, SecAggAdvert], survivors: list[str], dropped: list[str]
) -> SecAggUnmaskRequest:
    return SecAggUnmaskRequest(
        federation_id="sa",
        round_index=1,
        setup_sha256=transport.digest(setup),
        survivors=survivors,
        dropped=dropped,
        relayed={r: {s: a.shares[r] for s, a in adverts.items()} for r in survivors},
    )


def test_an_honest_request_reveals_one_secret_per_site(protocol) -> None:  # type: ignore[no-untyped-def]
    keys, roster, adverts, setup = protocol
    request = _request(setup, adverts, ["site-a", "site-b", "site-c"], ["site-d"])
    answer = build_answer(request, setup, roster, "site-a", keys["site-a"])
    assert sorted(answer.self_mask_shares) == ["site-a", "site-b", "site-c"]
    assert sorted(answer.mask_key_shares) == ["site-d"]


def test_a_site_both_surviving_and_dropped_is_refused(protocol, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    keys, roster, adverts, setup = protocol
    request = _request(setup, adverts, ["site-a", "site-b", "site-c"], ["site-c", "site-d"])
    with pytest.raises(SecAggRefusedError, match="both surviving and dropped"):
        build_answer(request, setup, roster, "site-a", keys["site-a"])
    exchange = Exchange(LocalDirectoryStore(tmp_path), "sa")
    assert answer_unmask(exchange, request, setup, roster, "site-a", keys["site-a"]) is None
    assert not exchange.store.exists(exchange.layout.secagg_update_key(1, "site-a", "answer"))


def test_too_few_survivors_or_another_setup_is_refused(protocol) -> None:  # type: ignore[no-untyped-def]
    keys, roster, adverts, setup = protocol
    few = _request(setup, adverts, ["site-a", "site-b"], ["site-c", "site-d"])
    with pytest.raises(SecAggRefusedError, match="fewer than threshold 3"):
        build_answer(few, setup, roster, "site-a", keys["site-a"])
    other_setup = setup.model_copy(update={"participants": dict(setup.participants)})
    forged = _request(other_setup, adverts, SITES, []).model_copy(update={"setup_sha256": "f" * 64})
    with pytest.raises(SecAggRefusedError, match="not built on the round's setup"):
        build_answer(forged, setup, roster, "site-a", keys["site-a"])


def test_a_request_that_changes_after_answering_is_refused(protocol, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    keys, roster, adverts, setup = protocol
    exchange = Exchange(LocalDirectoryStore(tmp_path), "sa")
    first = _request(setup, adverts, ["site-a", "site-b", "site-c"], ["site-d"])
    assert answer_unmask(exchange, first, setup, roster, "site-a", keys["site-a"]) is not None
    # the aggregator now claims site-c dropped too (to learn its mask key as well)
    second = _request(setup, adverts, ["site-a", "site-b", "site-d"], ["site-c"])
    assert answer_unmask(exchange, second, setup, roster, "site-a", keys["site-a"]) is None
    stored = transport.read(
        exchange, exchange.layout.secagg_update_key(1, "site-a", "answer"), SecAggUnmaskAnswer
    )
    assert stored is not None and stored.request_sha256 == transport.digest(first)
    assert "site-c" not in stored.mask_key_shares


def test_rosters_that_weaken_the_protocol_are_refused() -> None:
    keys = {s: masking.new_private_key() for s in SITES}
    manifest = GlobalManifest(
        federation_id="sa",
        round_index=1,
        task="train",
        sha256="0" * 64,
        num_bytes=1,
        deadline_unix=0.0,
        invited_sites=SITES,
        config_hash="x",
        created_unix=0.0,
    )
    check_roster(_roster(keys), "site-a", keys["site-a"], manifest, CONFIG)
    with pytest.raises(SecAggRefusedError, match="a minority could unmask"):
        check_roster(_roster(keys, threshold=2), "site-a", keys["site-a"], manifest, CONFIG)
    swapped = dict(keys, **{"site-a": masking.new_private_key()})
    with pytest.raises(SecAggRefusedError, match="another public key"):
        check_roster(_roster(swapped), "site-a", keys["site-a"], manifest, CONFIG)
