"""Keep freed update-sized buffers in the heap so the next update reuses warm pages.

The aggregator reads one update, sums it and frees it, N times per round. glibc returns every
block above its (dynamic) mmap threshold to the OS on free, so each update's buffer is a fresh
mapping and every page faults again on first touch, slower end to end than the same loop with
blocks kept (``python -m bench --only aggregation`` measures both). Raising the mmap threshold
with ``mallopt`` keeps blocks of up to 32 MiB (glibc's largest threshold) in the heap, and
trimming only above 256 MiB keeps them there. Updates above 32 MiB (models over 8M float32
parameters) would still be mapped and unmapped one by one, and with admission checking ahead on
worker threads each unmapping also interrupts the other core (a TLB shootdown), which costs more
CPU per GB admitted than checking one update at a time. So mmap for allocations is switched off
altogether (``M_MMAP_MAX`` 0): every block comes from a heap and is reused. Memory stays
O(model): the heap holds what the round holds at its peak (the sum and the few updates in
flight), and its free top above 256 MiB is returned.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def keep_freed_buffers() -> bool:
    """Set glibc's mmap and trim thresholds; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        and mallopt(_M_MMAP_MAX, 0) == 1
    )
