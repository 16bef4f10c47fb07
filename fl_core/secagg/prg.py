"""The mask generator: AES-256 in counter mode from ``cryptography``, keyed by a 32-byte seed.

Why AES-CTR and not numpy's PCG64/Philox: masks must be computationally indistinguishable
from uniform to someone who sees the masked update, which needs a cryptographic PRG; PCG64 is
a statistical generator whose state can be recovered from its output. AES-CTR is one (under
the standard PRF assumption on AES), is in the vetted ``cryptography`` package, and runs at
hardware speed with AES-NI (``python -m bench --only secagg_bench`` times a masked round).
Every key is used once (a fresh seed per round and pair), so the all-zero counter block is
safe.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fl_core.secagg.field import U64

SEED_BYTES = 32
_ZERO_COUNTER = bytes(16)


def derive_key(material: bytes, info: bytes, length: int = SEED_BYTES) -> bytes:
    """HKDF-SHA256 of key material, bound to ``info`` (federation, round, sites, purpose)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(material)


def expand(seed: bytes, count: int) -> U64:
    """``count`` uniform 64-bit words from a 32-byte seed (the AES-256-CTR keystream)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
    stream = encryptor.update(bytes(8 * count)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=False)
