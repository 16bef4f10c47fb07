"""Masking: a masked update is uniform noise, and the unmasked sum is FedAvg."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fl_core.aggregation import weighted_mean
from fl_core.secagg import masking, prg
from fl_core.secagg.field import (
    FieldParams,
    dequantise,
    fractional_bits_for,
    quantisation_error_bound,
    quantise,
)

FED, ROUND = "test", 3


def _keys(sites: list[str]) -> dict[str, masking.X25519PrivateKey]:
    return {site: masking.new_private_key() for site in sites}


def _pair_seeds(site: str, keys: dict[str, masking.X25519PrivateKey]) -> dict[str, bytes]:
    return {
        peer: masking.pair_seed(keys[site], masking.public_bytes(key), FED, ROUND, site, peer)
        for peer, key in keys.items()
        if peer != site
    }


@pytest.mark.parametrize("bits", [64, 40])
def test_masked_update_is_uniform_on_the_ring(bits: int) -> None:
    """What the aggregator holds for one hospital: chi-square on the top byte and KS on the
    value, over 200 000 coordinates of a constant (maximally structured) update. Seeds are
    fixed bytes, so the statistics (and the test) are deterministic."""
    params = FieldParams(bits, fractional_bits_for(bits, 4.0, 1000, 20), 4.0)
    update = quantise(np.full(200_000, 0.25), 1000, params)
    assert len(set(update.tolist())) == 1
    pair_seeds = {f"peer-{i}": bytes([i]) * 32 for i in range(3)}
    masked = masking.mask_update(update, "site-a", bytes(range(32)), pair_seeds, params)
    top_byte = (masked >> np.uint64(bits - 8)).astype(np.int64)
    counts = np.bincount(top_byte, minlength=256)
    assert stats.chisquare(counts).pvalue > 0.01
    unit = masked.astype(np.float64) / float(2**bits)
    assert stats.kstest(unit, "uniform").pvalue > 0.01
    assert int(masked.max()) < 2**bits
    # and the structured update itself is, of course, far from uniform
    raw_counts = np.bincount((update >> np.uint64(bits - 8)).astype(np.int64), minlength=256)
    assert stats.chisquare(raw_counts).pvalue < 1e-10


def test_prg_is_deterministic_and_seed_bound() -> None:
    a = prg.expand(b"\x01" * 32, 1000)
    assert np.array_equal(a, prg.expand(b"\x01" * 32, 1000))
    assert not np.array_equal(a, prg.expand(b"\x02" * 32, 1000))
    with pytest.raises(ValueError, match="32 bytes"):
        prg.expand(b"short", 10)


@pytest.mark.parametrize("bits", [64, 48, 32])
def test_unmasked_sum_equals_fedavg_within_quantisation_error(bits: int) -> None:
    rng = np.random.default_rng(11)
    sites = [f"site-{c}" for c in "abcdef"]
    global_w = {"w": rng.normal(size=(50, 8)), "b": rng.normal(size=8)}
    examples = {s: int(rng.integers(5, 900)) for s in sites}
    trained = {
        s: {k: v + rng.normal(scale=0.05, size=v.shape) for k, v in global_w.items()} for s in sites
    }
    params = FieldParams(bits, fractional_bits_for(bits, 4.0, 1000, len(sites)), 4.0)
    keys = _keys(sites)
    total = np.zeros(8 * 50 + 8, np.uint64)
    self_seeds = []
    for s in sites:
        delta = masking.flatten(trained[s]) - masking.flatten(global_w)
        seed = masking.self_mask_seed(bytes([len(s)]) * 32 + b"", FED, ROUND, s)
        self_seeds.append(seed)
        masked = masking.mask_update(
            quantise(delta, examples[s], params), s, seed, _pair_seeds(s, keys), params
        )
        np.add(total, masked, out=total)
    unmasked = masking.remove_masks(total, self_seeds, [], params)
    weight = sum(examples.values())
    mean = masking.flatten(global_w) + dequantise(unmasked, params) / weight
    expected = masking.flatten(weighted_mean([(trained[s], examples[s]) for s in sites]))
    bound = quantisation_error_bound(len(sites), weight, params)
    assert np.max(np.abs(mean - expected)) <= bound + 1e-12
    # with pair masks alone left in, the sum would be garbage: masks really cancel only in sum
    assert np.max(np.abs(dequantise(total, params))) > 1e3


def test_dropped_sites_pair_masks_are_removed() -> None:
    rng = np.random.default_rng(5)
    sites = ["a", "b", "c", "d"]
    params = FieldParams(64, fractional_bits_for(64, 4.0, 100, 4), 4.0)
    keys = _keys(sites)
    deltas = {s: rng.normal(scale=0.1, size=30) for s in sites}
    survivors, dropped = ["a", "c", "d"], ["b"]
    total = np.zeros(30, np.uint64)
    self_seeds = []
    for s in survivors:
        seed = masking.self_mask_seed(s.encode() * 32, FED, ROUND, s)
        self_seeds.append(seed)
        np.add(
            total,
            masking.mask_update(
                quantise(deltas[s], 1, params), s, seed, _pair_seeds(s, keys), params
            ),
            out=total,
        )
    pairs = [
        (u, v, masking.pair_seed(keys[v], masking.public_bytes(keys[u]), FED, ROUND, v, u))
        for v in dropped
        for u in survivors
    ]
    unmasked = masking.remove_masks(total, self_seeds, pairs, params)
    expected = sum(deltas[s] for s in survivors)
    bound = quantisation_error_bound(3, 1, params)
    assert np.max(np.abs(dequantise(unmasked, params) - expected)) <= bound


def test_field_too_small_is_a_config_error() -> None:
    from fl_core.errors import ConfigError

    with pytest.raises(ConfigError, match="raise modulus_bits"):
        fractional_bits_for(24, 4.0, 10_000_000, 200)


def test_share_encryption_binds_sites_and_round() -> None:
    from cryptography.exceptions import InvalidTag

    a, b, c = masking.new_private_key(), masking.new_private_key(), masking.new_private_key()
    pa = masking.public_bytes(a)
    nonce = bytes(12)
    cipher, associated = masking.share_cipher(a, masking.public_bytes(b), FED, ROUND, "a", "b")
    sealed = cipher.encrypt(nonce, b"x", associated)
    cipher, associated = masking.share_cipher(b, pa, FED, ROUND, "a", "b")
    assert cipher.decrypt(nonce, sealed, associated) == b"x"
    for own, round_index in ((b, ROUND + 1), (c, ROUND)):  # another round; a third site
        cipher, associated = masking.share_cipher(own, pa, FED, round_index, "a", "b")
        with pytest.raises(InvalidTag):
            cipher.decrypt(nonce, sealed, associated)
