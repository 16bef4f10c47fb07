"""Updates as integers mod 2**modulus_bits: the ring the masks live in.

A power-of-two modulus (not a prime) because numpy's uint64 arithmetic wraps mod 2**64 for
free, and a uniform mask mod 2**b is just the low b bits of uniform PRG output, so a masked
value is exactly uniform. Shamir sharing needs a prime field and has its own (``shamir``).

A hospital sends ``round(clip(delta, -c, c) * weight * 2**f)`` with ``weight`` its number of
training examples. ``f`` (fractional bits) is chosen so that the sum over every hospital stays
below ``2**(b-2)`` in magnitude: it can never wrap, and its sign is read back unambiguously.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fl_core.errors import ConfigError

U64 = npt.NDArray[np.uint64]
MIN_FRACTIONAL_BITS = 8


@dataclass(frozen=True)
class FieldParams:
    """How one round quantises: both sides read these from the round's roster."""

    modulus_bits: int
    fractional_bits: int
    clip: float

    @property
    def mask(self) -> np.uint64:
        return np.uint64((1 << self.modulus_bits) - 1)

    def reduce(self, values: U64) -> U64:
        """Values mod 2**modulus_bits, in place (uint64 arithmetic is already mod 2**64)."""
        if self.modulus_bits < 64:
            np.bitwise_and(values, self.mask, out=values)
        return values


def fractional_bits_for(modulus_bits: int, clip: float, max_weight: int, num_sites: int) -> int:
    """The most fractional bits for which ``num_sites`` updates of weight <= ``max_weight``
    clipped to ``clip`` sum below ``2**(modulus_bits - 2)``: the sum cannot overflow."""
    if num_sites < 1 or max_weight < 1:
        raise ConfigError("secure aggregation needs at least one site of weight >= 1")
    headroom = math.ceil(math.log2(clip * max_weight * num_sites))
    bits = modulus_bits - 2 - headroom
    if bits < MIN_FRACTIONAL_BITS:
        raise ConfigError(
            f"privacy.secagg.modulus_bits {modulus_bits} leaves {bits} fractional bits for "
            f"{num_sites} sites of up to {max_weight} examples clipped at {clip}; raise "
            "modulus_bits, lower privacy.secagg.clip or admission.max_num_examples"
        )
    return bits


def quantise(delta: npt.NDArray[np.floating], weight: int, params: FieldParams) -> U64:
    """``weight * clip(delta)`` as ring elements (two's complement, mod 2**modulus_bits)."""
    scaled = np.clip(delta.astype(np.float64), -params.clip, params.clip)
    scaled *= float(weight) * float(2**params.fractional_bits)
    integers = np.rint(scaled).astype(np.int64)
    return params.reduce(integers.view(np.uint64))


def dequantise(total: U64, params: FieldParams) -> npt.NDArray[np.float64]:
    """A sum of ring elements back to a signed float sum (still times the weights)."""
    values = params.reduce(total.copy())
    if params.modulus_bits == 64:
        signed = values.view(np.int64).astype(np.float64)
    else:
        half = np.uint64(1 << (params.modulus_bits - 1))
        signed = values.astype(np.float64)
        signed[values >= half] -= float(2**params.modulus_bits)
    return signed / float(2**params.fractional_bits)


def quantisation_error_bound(num_sites: int, total_weight: int, params: FieldParams) -> float:
    """Largest per-coordinate error of the weighted mean from rounding (half a unit per site).

    Clipping is not an error the bound covers: deltas beyond ``clip`` are changed on purpose.
    """
    return num_sites * 0.5 / float(2**params.fractional_bits) / total_weight
