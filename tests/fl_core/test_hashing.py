"""The digests fedsilo writes in one place and checks in another agree with each other and with
SHA-256 itself."""

from __future__ import annotations

from fl_core.exchange.ledger import chain_hash
from fl_core.hashing import (
    canonical_json,
    canonical_json_sha256,
    digest_b64,
    sha256_b64,
    sha256_hex,
)

ABC_HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
ABC_B64 = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="


def test_sha256_forms_match_the_standard_vector() -> None:
    assert sha256_hex(b"abc") == ABC_HEX
    assert sha256_b64(b"abc") == ABC_B64
    assert digest_b64(bytes.fromhex(ABC_HEX)) == ABC_B64


def test_a_view_hashes_as_its_bytes() -> None:
    """Multipart parts are hashed from a memoryview of the object, never a copy."""
    data = bytearray(b"xxabcxx")
    assert sha256_b64(memoryview(data)[2:5]) == ABC_B64
    assert sha256_hex(data) == sha256_hex(bytes(data))


def test_canonical_json_ignores_key_order_and_spacing() -> None:
    one = {"b": [1, {"y": 2, "x": 1}], "a": None}
    other = {"a": None, "b": [1, {"x": 1, "y": 2}]}
    assert canonical_json(one) == '{"a":null,"b":[1,{"x":1,"y":2}]}'
    assert canonical_json_sha256(one) == canonical_json_sha256(other)
    assert canonical_json_sha256(one) != canonical_json_sha256({**one, "a": 0})


def test_the_ledger_chains_with_the_same_digest() -> None:
    fields = {"round_index": 1, "prev_hash": None, "accepted": ["site-a"]}
    assert chain_hash(fields) == sha256_hex(canonical_json(fields).encode())
