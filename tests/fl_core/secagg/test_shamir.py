"""Shamir sharing: any t shares reconstruct, t - 1 shares are consistent with every secret."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_core.secagg import shamir

secrets_ = st.integers(0, (1 << 512) - 1)


@settings(max_examples=60, deadline=None)
@given(secrets_, st.integers(2, 12), st.data())
def test_any_t_shares_reconstruct(secret: int, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    shares = shamir.split(secret, t, list(range(1, n + 1)))
    subset = data.draw(st.permutations(shares)).copy()[: data.draw(st.integers(t, n))]
    assert shamir.reconstruct(subset, t) == secret


def _interpolate(points: list[tuple[int, int]], x: int) -> int:
    p = shamir.PRIME
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (x - xj) % p
                den = den * (xi - xj) % p
        total = (total + yi * num * pow(den, -1, p)) % p
    return total


@settings(max_examples=40, deadline=None)
@given(secrets_, secrets_, st.integers(2, 8), st.data())
def test_t_minus_one_shares_reveal_nothing(
    secret: int, other: int, t: int, data: st.DataObject
) -> None:
    """Perfect hiding: for any t - 1 shares of ``secret`` and any ``other`` secret there is
    exactly one polynomial of degree t - 1 through them with constant term ``other``, so the
    t - 1 shares are equally likely under every secret."""
    n = data.draw(st.integers(t, t + 4))
    shares = shamir.split(secret, t, list(range(1, n + 1)))
    seen = data.draw(st.permutations(shares))[: t - 1]
    points = [(0, other)] + [(s.x, s.y) for s in seen]
    # the polynomial through (0, other) and the seen shares reproduces every seen share ...
    for share in seen:
        assert _interpolate(points, share.x) == share.y
    # ... and then the other holders' shares of it reconstruct ``other``, not ``secret``
    rebuilt = [shamir.Share(x, _interpolate(points, x)) for x in range(1, n + 1)]
    assert shamir.reconstruct(rebuilt, t) == other


def test_fewer_than_t_shares_refused_and_bytes_round_trip() -> None:
    rng = random.Random(7)
    shares = shamir.split(12345, 3, [1, 2, 3, 4], randbelow=lambda p: rng.randrange(p))
    with pytest.raises(ValueError, match="cannot reconstruct"):
        shamir.reconstruct(shares[:2], 3)
    again = [shamir.Share.from_bytes(s.x, s.to_bytes()) for s in shares]
    assert shamir.reconstruct(again[1:], 3) == 12345
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(1, 2, [1, 1])
    with pytest.raises(ValueError, match="outside the field"):
        shamir.Share.from_bytes(1, b"\xff" * shamir.SHARE_BYTES)
