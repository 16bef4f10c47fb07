"""Admission checks run ahead of the running sum, on worker threads.

Checking an update (reading it, its sha256 where the store does not hand one over, header and
manifest) costs more than adding it to the sum (``python -m bench --only aggregation``
measures both), and one file's sha256 runs on one core. File and socket reads and hashlib
release the GIL, so the next updates are checked on worker threads while the caller adds the
current one (``workers_for`` leaves the caller a core where nothing is hashed). The caller
takes the results in the order of the keys, whatever order the threads finish in, so the sum
(and the model) is the same as a one-by-one loop's; a check's exception is raised when the
caller takes that key's result, exactly where the one-by-one loop would have raised it.

At most ``ahead`` checks are submitted beyond the result the caller holds, so at most
``ahead + 1`` updates are in memory at once: memory stays O(model). Closing the iterator early
(an exception in the caller) cancels the checks not yet started and waits for the running
ones: no thread outlives the call.

Threads pay only for large updates. Checking a small model's answer (the default eICU model's
is 40 kB) is mostly Python that holds the GIL (header and manifest parsing, the exchange's
paths), and handing it to a thread and back costs more CPU than the check itself; at a million
parameters the threads win on wall time for the same CPU (``python -m bench --only
aggregation`` runs the server at each model size). So updates under
``THREADED_MIN_UPDATE_BYTES`` are checked in the caller's thread (``workers_for``).
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

_K = TypeVar("_K")
_T = TypeVar("_T")

MAX_WORKERS = 4
"""More threads would hold more updates in memory for little gain: the sum is one stream."""


THREADED_MIN_UPDATE_BYTES = 1 << 20
"""Updates smaller than this are checked in the caller's thread (the module's docstring)."""


def default_workers() -> int:
    """One checking thread per core, up to ``MAX_WORKERS``."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def workers_for(update_bytes: int, *, hashed: bool = True) -> int:
    """Checking threads for updates of ``update_bytes``: none (the caller's) when small.

    ``hashed``: each check hashes its update (a local folder). Hashing costs more than the
    sum, so the checks get every core; where the store hands the digest over (S3), a check
    is a read and a parse, and one core is left to the caller's sum.
    """
    if update_bytes < THREADED_MIN_UPDATE_BYTES:
        return 0
    return default_workers() if hashed else max(1, default_workers() - 1)


def checked_ahead(
    check: Callable[[_K], _T],
    keys: Sequence[_K],
    *,
    workers: int | None = None,
    ahead: int | None = None,
) -> Iterator[tuple[_K, Callable[[], _T]]]:
    """Yield ``(key, result)`` in the order of ``keys``; ``result()`` returns ``check(key)``.

    ``check`` runs on up to ``workers`` threads (default ``default_workers()``), at most
    ``ahead`` keys (default ``workers``) beyond the one whose result was last yielded. The
    caller drops its ``result`` before asking for the next key, or one more update stays in
    memory. ``workers=0``: no thread; each key is checked in the caller's thread when its
    result is taken, one at a time.
    """
    count = workers if workers is not None else default_workers()
    if count == 0 and ahead is None:
        yield from _checked_inline(check, keys)
        return
    limit = ahead if ahead is not None else count
    if count < 1 or limit < 1:
        raise ValueError(f"workers ({count}) and ahead ({limit}) must be >= 1 (workers 0: inline)")
    pending: deque[tuple[_K, Future[_T]]] = deque()
    submitted = 0
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="fedsilo-check") as pool:
        try:
            while True:
                while submitted < len(keys) and len(pending) <= limit:
                    pending.append((keys[submitted], pool.submit(check, keys[submitted])))
                    submitted += 1
                if not pending:
                    return
                key, future = pending.popleft()
                yield key, future.result
                del future  # a result may be a whole update: hold none beyond the caller's
        finally:
            for _, waiting in pending:
                waiting.cancel()


def _checked_inline(
    check: Callable[[_K], _T], keys: Sequence[_K]
) -> Iterator[tuple[_K, Callable[[], _T]]]:
    """``checked_ahead`` without threads: ``result()`` runs the check (and raises its error)."""
    for key in keys:
        yield key, functools.partial(check, key)
