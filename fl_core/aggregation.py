"""Streaming FedAvg: a weighted mean built one update at a time, at the speed of memory.

The aggregator holds one float64 accumulator per tensor and one update in memory at a time, so
memory is O(model) whatever the number of hospitals. float64 accumulation keeps the result
within 1e-6 relative of an exact float64 mean, far below anything a metric sees.

An update is added in place with no model-sized temporary. Models of
``COMPILED_MIN_ELEMENTS`` parameters or more, in float32 or float64, are added by one compiled
loop (``fl_core.compiled_sum``) that widens, weights, scans and adds each element in a single
pass; smaller models and other dtypes are added slice by slice (``CHUNK_ELEMENTS``) in numpy,
each slice's float64 product going to a small scratch buffer that stays in cache. Either way
adding an update reads it once and reads and writes the sum once. The compiled loop runs on
the caller's thread: one core sums faster than the other cores read and check the next
updates beside it (``python -m bench --only aggregation``). On numpy's path large models are
cut into contiguous spans, one per thread: numpy's ufuncs release the GIL, so the spans are
summed at once (the compiled loop releases it too, for callers that ask for threads).

The NaN/Inf scan is fused with the add: the compiled loop flags a non-finite product as it
adds it; numpy's path scans each product slice while it is in cache, just before it is added.
An update found to hold NaN or Inf raises ``NonFiniteUpdateError``; part or all of it was
added, so the sum is void until it is begun again and the round's accepted updates re-added
(the round loop does, as it does on resume).

Determinism: every element of the sum is ``fl(sum + fl(w * x))`` in the order updates were
added, whichever path, thread or slice it falls in, so the same updates in the same order give
the same bytes on any thread count (a resumed round re-adds them in their recorded order and
reproduces the sum bit for bit).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from threading import Lock

import numpy as np
import numpy.typing as npt

from fl_core import compiled_sum
from fl_core.errors import AggregationError, NonFiniteUpdateError
from fl_core.serialisation import TensorSpec
from fl_core.types import Weights

CHUNK_ELEMENTS = 1 << 17
"""Elements per slice of an update added at a time (a float64 scratch of 1 MiB)."""
THREAD_MIN_ELEMENTS = 1 << 18
"""Parameters per thread at least: a share is then far more work than handing it to a thread
costs (``python -m bench --only aggregation`` runs the server at each model size)."""
MAX_THREADS = 4
"""Memory bandwidth is shared: past a few threads more only add contention."""
COMPILED_MIN_ELEMENTS = 1 << 18
"""Parameters from which float32/float64 updates are added by the compiled loop
(``fl_core.compiled_sum``): below, numba's one-off start-up in the process (about 0.6 s) costs
more than a federation's rounds would save (the eICU model's 10k parameters take numpy's path)."""

F64Array = npt.NDArray[np.float64]
_Span = tuple[str, int, int]
"""One thread's share of the model: a tensor's name and a range of its flat elements."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = Lock()


def _threads() -> ThreadPoolExecutor:
    """One pool for the process, started the first time a model is large enough to use it."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=MAX_THREADS, thread_name_prefix="fedsilo-aggregate"
            )
        return _pool


def thread_count(num_params: int, cpus: int | None = None) -> int:
    """How many threads sum a model of ``num_params``: one per ``THREAD_MIN_ELEMENTS``, up to
    the CPUs this process may run on and ``MAX_THREADS``."""
    available = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return max(1, min(MAX_THREADS, available, num_params // THREAD_MIN_ELEMENTS))


def split_spans(sizes: Mapping[str, int], parts: int) -> list[list[_Span]]:
    """Cut the tensors' flat elements into ``parts`` contiguous shares of nearly equal size,
    each a whole number of slices where the tensor allows (a share may cross tensors)."""
    total = sum(sizes.values())
    per_part = -(-total // parts)
    per_part = -(-per_part // CHUNK_ELEMENTS) * CHUNK_ELEMENTS
    shares: list[list[_Span]] = [[] for _ in range(parts)]
    index, room = 0, per_part
    for name, size in sizes.items():
        start = 0
        while start < size:
            if room == 0 and index < parts - 1:
                index, room = index + 1, per_part
            stop = size if index == parts - 1 else min(size, start + room)
            shares[index].append((name, start, stop))
            room -= stop - start
            start = stop
    return [share for share in shares if share]


class StreamingWeightedMean:
    """Accumulates ``sum(n_i * w_i)`` and ``sum(n_i)``; ``result()`` divides once."""

    def __init__(self, specs: Mapping[str, TensorSpec], threads: int | None = None) -> None:
        self._specs = dict(specs)
        self._sums = {
            name: np.zeros(spec.shape, dtype=np.float64) for name, spec in self._specs.items()
        }
        self._flat_sums = {name: total.reshape(-1) for name, total in self._sums.items()}
        sizes = {name: flat.size for name, flat in self._flat_sums.items()}
        self._compiled: compiled_sum.MultiplyAdd | None = None
        if sum(sizes.values()) >= COMPILED_MIN_ELEMENTS and any(
            compiled_sum.uses_compiled_loop(np.dtype(spec.dtype)) for spec in self._specs.values()
        ):
            compiled_sum.prepare()
            self._compiled = compiled_sum.compiled_multiply_add()
        if threads is not None:
            count = threads
        elif self._compiled is not None:
            count = 1  # one core's loop outruns the checks that the other cores run beside it
        else:
            count = thread_count(sum(sizes.values()))
        self._shares = split_spans(sizes, max(1, count)) if sizes else []
        self._scratch = [np.empty(CHUNK_ELEMENTS, dtype=np.float64) for _ in self._shares]
        self.total_weight = 0.0
        self.count = 0
        self._void = False

    def add(self, weights: Mapping[str, npt.NDArray[np.generic]], weight: float) -> None:
        """Add one update (names and shapes checked at admission); raises
        ``NonFiniteUpdateError`` where it holds NaN or Inf, leaving the mean void."""
        self._check_usable()
        if not weight > 0:
            raise AggregationError(f"update weight must be > 0, got {weight}")
        weight = float(weight)  # an int weight would compile a second loop mid-round
        if weights.keys() != self._sums.keys():
            raise AggregationError("update tensors differ from the global model's; admit first")
        flat = {name: np.asarray(weights[name]).reshape(-1) for name in self._sums}
        compiled = self._compiled

        def add_share(share: list[_Span], scratch: F64Array) -> None:
            # a slice's float64 sum may overflow (only float64 updates near 1e308 can): the
            # scan then looks element by element; the error state is set once per share,
            # not per slice (it is thread-local, so each thread sets its own)
            with np.errstate(over="ignore", invalid="ignore"):
                for name, start, stop in share:
                    total, update = self._flat_sums[name], flat[name]
                    if compiled is not None and compiled_sum.uses_compiled_loop(update.dtype):
                        if compiled(total, update, weight, start, stop):
                            raise NonFiniteUpdateError(name)
                    else:
                        _multiply_add(total, update, weight, start, stop, scratch, name)

        try:
            self._each_share(add_share)
        except NonFiniteUpdateError:
            self._void = True
            raise
        self.total_weight += weight
        self.count += 1

    def _check_usable(self) -> None:
        if self._void:
            raise AggregationError(
                "the sum holds part of a non-finite update: begin the round again and re-add "
                "the accepted updates"
            )

    def result(self) -> Weights:
        self._check_usable()
        if self.count == 0 or self.total_weight <= 0:
            raise AggregationError("no updates to average; check round.min_sites")
        result: Weights = {
            name: np.empty(total.shape, dtype=self._specs[name].dtype)
            for name, total in self._sums.items()
        }
        flat_out = {name: out.reshape(-1) for name, out in result.items()}

        def divide_share(share: list[_Span], scratch: F64Array) -> None:
            for name, start, stop in share:
                total = self._flat_sums[name]
                for low in range(start, stop, CHUNK_ELEMENTS):
                    high = min(low + CHUNK_ELEMENTS, stop)
                    part = scratch[: high - low]
                    np.divide(total[low:high], self.total_weight, out=part)
                    flat_out[name][low:high] = part

        self._each_share(divide_share)
        return result

    def _each_share(self, work: Callable[[list[_Span], F64Array], None]) -> None:
        """``work`` on every share with its own scratch: here for one, on threads for more."""
        if len(self._shares) <= 1:
            for share, scratch in zip(self._shares, self._scratch, strict=True):
                work(share, scratch)
            return
        pool = _threads()
        futures = [
            pool.submit(work, share, scratch)
            for share, scratch in zip(self._shares, self._scratch, strict=True)
        ]
        for future in futures:
            future.result()


def _multiply_add(
    total: F64Array,
    update: npt.NDArray[np.generic],
    weight: float,
    start: int,
    stop: int,
    scratch: F64Array,
    name: str,
) -> None:
    """``total[start:stop] += weight * update[start:stop]`` in float64, a cached slice at a
    time, each product slice scanned for NaN/Inf before it is added."""
    scan = update.dtype.kind in "fc"  # integers are always finite
    for low in range(start, stop, CHUNK_ELEMENTS):
        high = min(low + CHUNK_ELEMENTS, stop)
        product = scratch[: high - low]
        product[...] = update[low:high]  # widened to float64 exactly, then weighted in float64
        product *= weight
        # the slice's float64 sum is finite exactly when every value is, short of overflow
        # (only float64 updates near 1e308 can); that rare case is settled element-wise
        if scan and not _sum_finite(product) and not _all_finite(product):
            raise NonFiniteUpdateError(name)
        total[low:high] += product


def _sum_finite(values: F64Array) -> bool:
    """Called under ``np.errstate(over="ignore", invalid="ignore")`` (``add_share``)."""
    return math.isfinite(np.add.reduce(values))


def _all_finite(values: F64Array) -> bool:
    return bool(np.isfinite(values).all())


def weighted_mean(updates: Sequence[tuple[Mapping[str, npt.NDArray[np.generic]], int]]) -> Weights:
    """FedAvg of in-memory updates weighted by ``num_examples`` (tests and small callers)."""
    if not updates:
        raise AggregationError("no updates; check round.min_sites")
    first = updates[0][0]
    specs = {name: TensorSpec(str(a.dtype), tuple(a.shape)) for name, a in first.items()}
    mean = StreamingWeightedMean(specs)
    for weights, num_examples in updates:
        mean.add(weights, float(num_examples))
    return mean.result()
