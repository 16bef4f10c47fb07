"""Key agreement, share encryption and the double mask of one update.

Each hospital has a long-term X25519 key (its public half is in its registration) used only
to encrypt Shamir shares for its peers, and draws per round a fresh X25519 *mask* key and a
fresh self-mask seed ``b_u``. Pairwise seeds come from the per-round mask keys:
``s_uv = HKDF(ECDH(mask_u, mask_v), federation|round|u|v)``, so reconstructing the mask key
of a hospital that dropped out exposes that round's pair masks only. The masked update is

    y_u = q(w_u x_u) + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)  (mod 2**b)

Pair masks cancel in the sum over the round's participants; the aggregator removes the
self masks of survivors and the pair masks of dropped sites from reconstructed secrets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from fl_core.secagg import prg
from fl_core.secagg.field import U64, FieldParams
from fl_core.serialisation import TensorSpec
from fl_core.types import Weights

KEY_BYTES = 32
NONCE_BYTES = 12


def new_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_private(raw: bytes) -> X25519PrivateKey:
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 private key is {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


_PROBE_KEY = X25519PrivateKey.from_private_bytes(bytes(range(1, KEY_BYTES + 1)))


def is_usable_public_key(raw: bytes) -> bool:
    """Whether ``raw`` is an X25519 public key that agrees a secret with anyone.

    A low-order point (all zeros, among others) makes every exchange with it fail
    (``ValueError``): advertised as a round mask key it would break the pair masks of every
    other participant and the aggregator's unmasking of a dropped site, so it is refused
    when the advert is read. Whether the exchange fails does not depend on the private key.
    """
    if len(raw) != KEY_BYTES:
        return False
    try:
        _PROBE_KEY.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        return False
    return True


def _context(purpose: str, federation_id: str, round_index: int, *sites: str) -> bytes:
    """HKDF info: every derived key names its purpose, federation, round and sites."""
    return json.dumps(["fedsilo-secagg", purpose, federation_id, round_index, *sites]).encode()


def pair_seed(
    own_mask_key: X25519PrivateKey,
    peer_mask_public: bytes,
    federation_id: str,
    round_index: int,
    site_a: str,
    site_b: str,
) -> bytes:
    """The seed both ends of a pair derive (sites in sorted order, so it is symmetric)."""
    shared = own_mask_key.exchange(X25519PublicKey.from_public_bytes(peer_mask_public))
    low, high = sorted((site_a, site_b))
    return prg.derive_key(shared, _context("pair-mask", federation_id, round_index, low, high))


def self_mask_seed(b_u: bytes, federation_id: str, round_index: int, site_id: str) -> bytes:
    """The PRG seed of a self mask, domain-separated from the shared secret ``b_u``."""
    return prg.derive_key(b_u, _context("self-mask", federation_id, round_index, site_id))


def seed_commitment(b_u: bytes) -> str:
    """sha256 of a self-mask seed (256 random bits: the hash reveals nothing about them)."""
    return hashlib.sha256(b"fedsilo-secagg-self-seed" + b_u).hexdigest()


def share_cipher(
    own_key: X25519PrivateKey,
    peer_public: bytes,
    federation_id: str,
    round_index: int,
    sender: str,
    recipient: str,
) -> tuple[ChaCha20Poly1305, bytes]:
    """The AEAD (ChaCha20-Poly1305) for shares from ``sender`` to ``recipient``, and the
    associated data to pass with every call.

    Its key is HKDF of the two long-term keys' ECDH, which only the two sites can compute;
    the associated data binds federation, round and both sites, so a share relayed to the
    wrong site or round fails to decrypt (``cryptography.exceptions.InvalidTag``).
    """
    shared = own_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    info = _context("share", federation_id, round_index, sender, recipient)
    return ChaCha20Poly1305(prg.derive_key(shared, info)), info


# ---- flat vectors --------------------------------------------------------------------------


def flat_size(specs: Mapping[str, TensorSpec]) -> int:
    return sum(int(np.prod(spec.shape, dtype=np.int64)) for spec in specs.values())


def flatten(weights: Mapping[str, npt.NDArray[np.generic]]) -> npt.NDArray[np.float64]:
    """Every tensor, in sorted name order, as one float64 vector."""
    return np.concatenate(
        [np.asarray(weights[name], np.float64).reshape(-1) for name in sorted(weights)]
    )


def flatten_u64(weights: Mapping[str, npt.NDArray[np.generic]]) -> U64:
    return np.concatenate(
        [np.asarray(weights[name]).reshape(-1) for name in sorted(weights)]
    ).astype(np.uint64, copy=False)


def unflatten(vector: npt.NDArray[np.generic], specs: Mapping[str, TensorSpec]) -> Weights:
    """Split a flat vector back into named tensors of the specs' shapes (dtype kept)."""
    out: Weights = {}
    offset = 0
    for name in sorted(specs):
        count = int(np.prod(specs[name].shape, dtype=np.int64))
        out[name] = vector[offset : offset + count].reshape(specs[name].shape)
        offset += count
    if offset != vector.size:
        raise ValueError(f"vector has {vector.size} elements, the model {offset}")
    return out


# ---- masks -----------------------------------------------------------------------------------


def pair_sign(site_id: str, peer: str) -> int:
    """+1 when the peer sorts after the site (it adds the mask), -1 before (it subtracts)."""
    if site_id == peer:
        raise ValueError("a site has no pair mask with itself")
    return 1 if peer > site_id else -1


def apply_mask(values: U64, seed: bytes, sign: int, params: FieldParams) -> None:
    """``values += sign * PRG(seed)`` mod 2**modulus_bits, in place."""
    stream = prg.expand(seed, values.size)
    if sign > 0:
        np.add(values, stream, out=values)
    else:
        np.subtract(values, stream, out=values)
    params.reduce(values)


def mask_update(
    quantised: U64,
    site_id: str,
    self_seed: bytes,
    pair_seeds: Mapping[str, bytes],
    params: FieldParams,
) -> U64:
    """``y_u``: the quantised update plus its self mask and signed pair masks."""
    masked = params.reduce(quantised.copy())
    apply_mask(masked, self_seed, 1, params)
    for peer in sorted(pair_seeds):
        apply_mask(masked, pair_seeds[peer], pair_sign(site_id, peer), params)
    return masked


def remove_masks(
    total: U64,
    self_seeds: Sequence[bytes],
    dropped_pairs: Sequence[tuple[str, str, bytes]],
    params: FieldParams,
) -> U64:
    """The sum of the survivors' quantised updates from the sum of their masked updates.

    ``dropped_pairs`` are ``(survivor, dropped, seed)``: the survivor's update still holds
    that pair mask (its partner's update never arrived to cancel it).
    """
    out = params.reduce(total.copy())
    for seed in self_seeds:
        apply_mask(out, seed, -1, params)
    for survivor, dropped, seed in dropped_pairs:
        apply_mask(out, seed, -pair_sign(survivor, dropped), params)
    return out
