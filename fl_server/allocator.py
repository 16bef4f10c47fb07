"""Keep freed update-sized buffers in the heap so the next update reuses warm pages.

The aggregator reads one update, sums it and frees it, N times per round. glibc returns
every block above its (dynamic) mmap threshold to the OS on free, so each update's buffer
is a fresh mapping and every page faults again on first touch: measured 4-5x slower end to
end than the same loop with blocks kept (bench/aggregation.py, "fedsilo, files" against
the MALLOC_* environment variant). Raising the thresholds with ``mallopt`` keeps blocks of
up to 32 MiB in the heap (glibc's maximum) and trims only above 256 MiB, so memory stays
O(model) while the page faults go away.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
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
    )
