"""FedAvg's float64 multiply-add of one update as a single compiled loop, NaN/Inf scan fused.

Why a compiled loop: numpy adds a weighted update in four passes over each slice (widen to
float64, multiply, scan for NaN/Inf, add), each a separate ufunc with its own call and its own
trip through the cache. The loop here does all four per element in one pass, vectorised by
LLVM (numba): it reads the update once and reads and writes the sum once, and runs as fast as
numpy's float32 ``acc += w * x`` over the same files, where numpy's float64 slices run at a
third of it (``docs/performance.md``).

The arithmetic is numpy's, element for element: ``sum[i] = fl(sum[i] + fl(float64(x[i]) * w))``
with no fused multiply-add (numba does not contract without ``fastmath``), so the two paths give
the same bytes and a round summed by either reproduces the other bit for bit.

The scan: ``v - v`` is 0 for every finite ``v`` and NaN for NaN and both infinities, so
``(v - v) != 0`` flags exactly the non-finite products (an update's own NaN/Inf, or a float64
value that overflows when weighted) as a comparison, which vectorises, where a floating-point
reduction would not. A flagged update has been added in full; the caller voids the sum.

numba costs about 0.6 s per process to import and initialise (the machine code itself is cached
on disk), so it is imported only for models large enough to repay it
(``fl_core.aggregation.COMPILED_MIN_ELEMENTS``) and for the dtypes compiled here.
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np
import numpy.typing as npt

COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
"""Update dtypes the loop is compiled for (native byte order); others take numpy's path."""


class MultiplyAdd(Protocol):
    """``total[start:stop] += weight * update[start:stop]``; True when a product is not finite."""

    def __call__(
        self,
        total: npt.NDArray[np.float64],
        update: npt.NDArray[np.generic],
        weight: float,
        start: int,
        stop: int,
        /,
    ) -> bool: ...


def _multiply_add_scan(total, update, weight, start, stop):  # type: ignore[no-untyped-def]
    """The loop numba compiles (plain Python: numba types it at the first call)."""
    out = total[start:stop]
    values = update[start:stop]
    flagged = 0
    for i in range(out.size):
        product = np.float64(values[i]) * weight
        flagged |= (product - product) != 0.0
        out[i] += product
    return flagged != 0


@functools.cache
def compiled_multiply_add() -> MultiplyAdd:
    """The compiled loop, built once per process (numba imported here, not at module import).

    Compiled code is cached on disk (numba's cache: beside this file, else the user's cache
    folder or ``NUMBA_CACHE_DIR``); where no cache folder is writable, it is compiled in memory.
    """
    import numba  # 0.3 s to import: only for models that use the loop

    def compile_with(cache: bool) -> MultiplyAdd:
        return numba.njit(  # type: ignore[no-any-return]
            _multiply_add_scan, cache=cache, nogil=True, boundscheck=False, error_model="numpy"
        )

    try:
        kernel = compile_with(cache=True)
    except RuntimeError:  # no cache locator: a read-only install with no writable home
        kernel = compile_with(cache=False)
    return kernel


@functools.cache
def prepare() -> None:
    """Compile (or load from the cache) the loop for every kind of update it will be handed,
    once per process: ``StreamingWeightedMean`` calls it when it is built for a large model,
    so that no round compiles in the middle of a sum.

    numba compiles per array type: each dtype, read-only (a decoded file) or writable.
    """
    kernel = compiled_multiply_add()
    total = np.zeros(1, dtype=np.float64)
    for dtype in COMPILED_DTYPES:
        for writeable in (True, False):
            update = np.zeros(1, dtype=dtype)
            update.flags.writeable = writeable
            kernel(total, update, 1.0, 0, 1)


def uses_compiled_loop(dtype: np.dtype[np.generic]) -> bool:
    """Whether updates of ``dtype`` can take the compiled loop."""
    return dtype in COMPILED_DTYPES and dtype.isnative
