"""Shamir secret sharing over the prime field GF(2**521 - 1).

Written by hand: there is no well-kept Python package for it (PyPI has small unmaintained
ones; pycryptodome's splits 16-byte secrets over GF(2**128) and is not a dependency here).
It is short: a random polynomial of degree ``t - 1`` with the secret as constant term,
evaluated at each holder's x; any ``t`` points give the secret by Lagrange interpolation at
0, and ``t - 1`` points are consistent with every secret (each value equally likely).

The prime is the Mersenne prime 2**521 - 1, so a 32-byte seed or X25519 key fits as one
field element and shares are 66 bytes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PRIME = (1 << 521) - 1
SHARE_BYTES = 66


@dataclass(frozen=True)
class Share:
    """One holder's point ``(x, y)`` on the polynomial; ``x`` is never 0."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "big")

    @classmethod
    def from_bytes(cls, x: int, data: bytes) -> Share:
        if len(data) != SHARE_BYTES:
            raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
        y = int.from_bytes(data, "big")
        if not 0 <= y < PRIME:
            raise ValueError("share value is outside the field")
        return cls(x, y)


def split(
    secret: int,
    threshold: int,
    xs: Sequence[int],
    randbelow: Callable[[int], int] = secrets.randbelow,
) -> list[Share]:
    """Shares of ``secret`` at ``xs``; any ``threshold`` of them reconstruct it."""
    if not 0 <= secret < PRIME:
        raise ValueError("secret must be an integer in [0, 2**521 - 1)")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be in 1..{len(xs)} (the holders)")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share x coordinates must be distinct and non-zero")
    coefficients = [secret] + [randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        y = 0
        for coefficient in reversed(coefficients):  # Horner
            y = (y * x + coefficient) % PRIME
        shares.append(Share(x, y))
    return shares


def reconstruct(shares: Sequence[Share], threshold: int) -> int:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0)."""
    if len(shares) < threshold:
        raise ValueError(
            f"{len(shares)} shares cannot reconstruct a secret of threshold {threshold}"
        )
    points = list(shares)[:threshold]
    if len({share.x for share in points}) != len(points):
        raise ValueError("two shares have the same x coordinate")
    secret = 0
    for i, share in enumerate(points):
        numerator, denominator = 1, 1
        for j, other in enumerate(points):
            if i != j:
                numerator = numerator * (-other.x) % PRIME
                denominator = denominator * (share.x - other.x) % PRIME
        secret = (secret + share.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret


def secret_from_bytes(data: bytes) -> int:
    if len(data) > 64:
        raise ValueError("secrets are at most 64 bytes")
    return int.from_bytes(data, "big")


def secret_to_bytes(secret: int, length: int) -> bytes:
    return secret.to_bytes(length, "big")
