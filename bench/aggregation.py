"""Streaming FedAvg from update files, next to in-place numpy accumulation (issue 3).

Why this benchmark exists: the aggregator must average N hospital updates while holding one
update in memory at a time (DESIGN.md, round step 5), and that must not cost much throughput
against the best a plain numpy loop can do with everything already in RAM. So for each cell
(N updates of P float32 parameters) it measures, in the same run:

- ``numpy f32`` / ``numpy f64``: ``acc += w * x`` in place (``np.multiply(..., out=)`` then
  ``np.add(..., out=)``) over arrays already in memory, with a float32 or float64 accumulator:
  the baseline, and the denominators of the ratios;
- ``fedsilo``: every update read from its safetensors file through ``LocalDirectoryStore``,
  decoded with the codec and added to ``StreamingWeightedMean`` (float64);
- ``fedsilo + admission``: the same with the manifest and weight checks the aggregator runs
  (``check_update_file``: header, manifest, sha256, views, NaN/Inf);
- Flower-style "hold all N updates, then average": its memory, N x P x 4 bytes, computed.

Each fedsilo measurement runs in a freshly spawned process so that its peak RSS
(``ru_maxrss``) is its own and shows O(P), not O(N x P). A stage breakdown (read, sha256,
decode, finite check, accumulate) and a few measured what-if variants say where the time goes
and what a change to ``fl_core`` would buy. Files are read from the page cache (they were just
written), which is the aggregator's best case on a local exchange.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import psutil
import safetensors.numpy
from rich.console import Console
from rich.table import Table

from fl_core import admission
from fl_core.aggregation import StreamingWeightedMean
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.serialization import (
    TensorSpec,
    decode_weights,
    read_header,
    sha256_hex,
    view_weights,
)
from fl_core.types import SiteId, Weights
from fl_server.allocator import keep_freed_buffers

FEDERATION_ID = "bench"
ROUND_INDEX = 1
GLOBAL_SHA256 = sha256_hex(b"fedsilo bench: stands in for the global model of round 1")
NUM_TENSORS = 4
"""P parameters are split over a few tensors, as in a small model's layers."""
BYTES_PER_PARAM = 4
FULL_NUM_UPDATES = (10, 50, 200)
FULL_NUM_PARAMS = (1_000_000, 10_000_000)
QUICK_NUM_UPDATES = (10, 50)
QUICK_NUM_PARAMS = (1_000_000,)
MIN_TOTAL_S = 1.0
"""Repeat a measurement (best of up to ``MAX_REPEATS``) until this much time was spent."""
MAX_REPEATS = 5
MEMORY_MARGIN_BYTES = 2 * 2**30
"""Left free for the rest of the machine when the in-memory baseline loads all N updates."""
DISK_MARGIN_BYTES = 2 * 2**30

_T = TypeVar("_T")
F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]


# ---- update files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateSet:
    """N update files written under ``root`` in the exchange layout (picklable for workers)."""

    root: Path
    num_params: int
    site_ids: tuple[SiteId, ...]
    num_examples: tuple[int, ...]

    @property
    def model_bytes(self) -> int:
        return self.num_params * BYTES_PER_PARAM


def tensor_sizes(num_params: int) -> dict[str, int]:
    """Split ``num_params`` over ``NUM_TENSORS`` named tensors (the last takes the rest)."""
    count = min(NUM_TENSORS, num_params)
    base = num_params // count
    sizes = {f"layer{i}.weight": base for i in range(count - 1)}
    sizes[f"layer{count - 1}.weight"] = num_params - base * (count - 1)
    return sizes


def tensor_specs(num_params: int) -> dict[str, TensorSpec]:
    return {name: TensorSpec("float32", (size,)) for name, size in tensor_sizes(num_params).items()}


def _encode_update(arrays: dict[str, F32Array], manifest: UpdateManifest) -> bytes:
    """Safetensors bytes as a hospital writes them: the tensors with the manifest inside."""
    return bytes(safetensors.numpy.save(arrays, metadata=admission.update_metadata(manifest)))


def write_updates(root: Path, num_updates: int, num_params: int, seed: int) -> UpdateSet:
    """Write ``num_updates`` distinct random updates and their manifests through the store.

    Every file has its own random contents and nonce, so the sha256 and nonce replay rules of
    admission see N genuinely different updates.
    """
    exchange = Exchange(LocalDirectoryStore(root), FEDERATION_ID)
    rng = np.random.default_rng(seed)
    sizes = tensor_sizes(num_params)
    site_ids = tuple(f"site-{i:03d}" for i in range(num_updates))
    num_examples = tuple(int(n) for n in rng.integers(50, 5_000, size=num_updates))
    for site_id, examples in zip(site_ids, num_examples, strict=True):
        arrays = {name: rng.random(size, dtype=np.float32) - 0.5 for name, size in sizes.items()}
        fields: dict[str, Any] = {
            "federation_id": FEDERATION_ID,
            "site_id": site_id,
            "round_index": ROUND_INDEX,
            "global_sha256": GLOBAL_SHA256,
            "num_examples": examples,
            "nonce": rng.bytes(16).hex(),
        }
        manifest = UpdateManifest(task="train", **fields)
        exchange.write_update(manifest, _encode_update(arrays, manifest))
    return UpdateSet(root, num_params, site_ids, num_examples)


def read_updates(updates: UpdateSet, stop: int, start: int = 0) -> list[tuple[Weights, float]]:
    """Updates ``start..stop-1`` in memory with their weights (for baselines and tests)."""
    exchange = Exchange(LocalDirectoryStore(updates.root), FEDERATION_ID)
    return [
        (decode_weights(exchange.read_update_weights(ROUND_INDEX, site_id)), float(examples))
        for site_id, examples in zip(
            updates.site_ids[start:stop], updates.num_examples[start:stop], strict=True
        )
    ]


# ---- what is measured -----------------------------------------------------------------------


def _admission_context(
    updates: UpdateSet, num_updates: int, seen_nonces: set[str], seen_sha256: set[str]
) -> admission.AdmissionContext:
    """What the aggregator would expect in round 1; the seen sets grow as updates are admitted."""
    return admission.AdmissionContext(
        federation_id=FEDERATION_ID,
        round_index=ROUND_INDEX,
        task="train",
        global_sha256=GLOBAL_SHA256,
        invited_sites=frozenset(updates.site_ids[:num_updates]),
        tensor_specs=tensor_specs(updates.num_params),
        max_update_bytes=updates.model_bytes + 2**20,
        max_manifest_bytes=2**16,
        max_num_examples=10**6,
        seen_nonces=seen_nonces,
        seen_sha256=seen_sha256,
    )


def stream_fedsilo(updates: UpdateSet, num_updates: int, *, admit: bool) -> Weights:
    """FedAvg the way the aggregator does it: one update file at a time into a float64 sum.

    Tensors are zero-copy views of the file's bytes (``view_weights``), as in admission.

    With ``admit`` every update passes ``check_update_file`` first (its manifest inside it,
    then its tensors), and its nonce and sha256 are remembered, so a duplicate would be
    rejected as a replay.
    """
    exchange = Exchange(LocalDirectoryStore(updates.root), FEDERATION_ID)
    mean = StreamingWeightedMean(tensor_specs(updates.num_params))
    seen_nonces: set[str] = set()
    seen_sha256: set[str] = set()
    ctx = _admission_context(updates, num_updates, seen_nonces, seen_sha256) if admit else None
    for site_id in updates.site_ids[:num_updates]:
        data = exchange.read_update_weights(ROUND_INDEX, site_id)
        if ctx is None:
            header = read_header(data)
            manifest = UpdateManifest.model_validate_json(
                admission.embedded_manifest(header.metadata)
            )
            weights = view_weights(data, header)
        else:
            manifest, digest, weights = admission.check_update_file(data, site_id, ctx)
            seen_nonces.add(manifest.nonce)
            seen_sha256.add(digest)
        mean.add(weights, float(manifest.num_examples))
        del data, weights  # drop this update before reading the next: one in memory at a time
    return mean.result()


def accumulate_numpy(
    in_memory: Sequence[tuple[Weights, float]], dtype: type[np.floating[Any]]
) -> dict[str, npt.NDArray[Any]]:
    """The baseline: in-place ``acc += w * x`` through a scratch buffer, then one division."""
    first = in_memory[0][0]
    acc = {name: np.zeros(array.shape, dtype=dtype) for name, array in first.items()}
    scratch = {name: np.empty(array.shape, dtype=dtype) for name, array in first.items()}
    total_weight = 0.0
    for weights, weight in in_memory:
        for name, total in acc.items():
            np.multiply(weights[name], weight, out=scratch[name])
            np.add(total, scratch[name], out=total)
        total_weight += weight
    return {name: total / total_weight for name, total in acc.items()}


def _best_of(run: Callable[[], _T], min_total_s: float) -> tuple[float, _T]:
    """Shortest wall time of ``run`` over repeats until ``min_total_s`` was spent (max 5)."""
    best = math.inf
    spent = 0.0
    result: _T | None = None
    for _ in range(MAX_REPEATS):
        result = None  # free the previous run's output: it must not count in the next peak RSS
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= min_total_s:
            break
    assert result is not None
    return best, result


@dataclass(frozen=True)
class StreamMeasurement:
    seconds: float
    start_rss_bytes: int
    peak_rss_bytes: int


def _peak_rss_bytes() -> int:
    """High-water mark of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def measure_stream(
    updates: UpdateSet, num_updates: int, admit: bool, min_total_s: float
) -> StreamMeasurement:
    """Worker body, meant for a fresh process: time ``stream_fedsilo`` and report its RSS.

    The process is set up as the aggregator's is (``RoundLoop`` calls ``keep_freed_buffers``).
    """
    keep_freed_buffers()
    start_rss = psutil.Process().memory_info().rss
    seconds, _ = _best_of(lambda: stream_fedsilo(updates, num_updates, admit=admit), min_total_s)
    return StreamMeasurement(seconds, start_rss, _peak_rss_bytes())


@dataclass(frozen=True)
class NumpyMeasurement:
    seconds_f32: float | None
    seconds_f64: float | None
    note: str = ""


def measure_numpy(
    updates: UpdateSet, grid_num_updates: Sequence[int], min_total_s: float
) -> dict[int, NumpyMeasurement]:
    """Worker body: the in-memory baselines for every N, loading updates as N grows.

    Holding N updates takes N x P x 4 bytes; an N that does not fit in the available memory
    (with a margin for everyone else on the machine) is skipped with a note, not swapped.
    """
    results: dict[int, NumpyMeasurement] = {}
    in_memory: list[tuple[Weights, float]] = []
    for num_updates in sorted(grid_num_updates):
        missing = num_updates - len(in_memory)
        needed = missing * updates.model_bytes + 4 * updates.num_params * 8 + MEMORY_MARGIN_BYTES
        available = psutil.virtual_memory().available
        if needed > available:
            results[num_updates] = NumpyMeasurement(
                None,
                None,
                f"skipped: needs {needed / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available",
            )
            continue
        in_memory.extend(read_updates(updates, num_updates, start=len(in_memory)))
        cell = in_memory[:num_updates]
        f32, _ = _best_of(functools.partial(accumulate_numpy, cell, np.float32), min_total_s)
        f64, _ = _best_of(functools.partial(accumulate_numpy, cell, np.float64), min_total_s)
        results[num_updates] = NumpyMeasurement(f32, f64)
    return results


# ---- stage breakdown and what-ifs -----------------------------------------------------------


def _payload_views(buffer: bytearray) -> dict[str, F32Array]:
    """Zero-copy float32 views of the tensors in safetensors bytes held in ``buffer``.

    Only for the what-if rows: the header was already checked by ``read_tensor_specs``.
    """
    (header_len,) = struct.unpack("<Q", buffer[:8])
    header = json.loads(bytes(buffer[8 : 8 + header_len]))
    base = 8 + header_len
    views: dict[str, F32Array] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        views[name] = np.frombuffer(
            buffer, dtype=np.float32, count=(end - start) // 4, offset=base + start
        )
    return views


def _read_into(path: Path, buffer: bytearray) -> memoryview:
    """Read a whole file into a reused buffer: no fresh allocation, no page faults."""
    size = path.stat().st_size
    view = memoryview(buffer)[:size]
    with open(path, "rb", buffering=0) as handle:
        done = 0
        while done < size:
            got = handle.readinto(view[done:])
            if not got:
                raise OSError(f"{path} shrank while being read")
            done += got
    return view


def stream_lean(
    updates: UpdateSet, num_updates: int, *, verify: bool, prefetch: bool
) -> dict[str, F32Array]:
    """What-if: the same FedAvg with reused read buffers, zero-copy views, float32 scaling.

    ``verify`` adds the sha256 and NaN/Inf checks; ``prefetch`` reads and hashes the next file
    in a thread (hashlib and file reads release the GIL) while this one is accumulated.
    Products are rounded to float32 before the float64 sum (as ``StreamingWeightedMean.add``
    does today under NumPy 2's NEP 50); each product is the same whatever the arrival order,
    so the sum stays order-independent to float64 rounding. The mean is divided in place.
    """
    layout = Exchange(LocalDirectoryStore(updates.root), FEDERATION_ID).layout
    paths = [
        updates.root / layout.update_weights_key(ROUND_INDEX, site_id)
        for site_id in updates.site_ids[:num_updates]
    ]
    capacity = max(path.stat().st_size for path in paths)
    buffers = [bytearray(capacity) for _ in range(2 if prefetch else 1)]
    totals = {
        name: np.zeros(size, dtype=np.float64)
        for name, size in tensor_sizes(updates.num_params).items()
    }

    def load(index: int) -> tuple[bytearray, str]:
        buffer = buffers[index % len(buffers)]
        view = _read_into(paths[index], buffer)
        digest = hashlib.sha256(view).hexdigest() if verify else ""
        return buffer, digest

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1) if prefetch else None
    try:
        pending = pool.submit(load, 0) if pool is not None else None
        for index, weight in enumerate(updates.num_examples[:num_updates]):
            if pending is not None and pool is not None:
                buffer, _ = pending.result()
                pending = pool.submit(load, index + 1) if index + 1 < len(paths) else None
            else:
                buffer, _ = load(index)
            views = _payload_views(buffer)
            if verify and not all(bool(np.isfinite(x).all()) for x in views.values()):
                raise ValueError("non-finite update")
            for name, x in views.items():
                np.multiply(x, weight, out=x)
                np.add(totals[name], x, out=totals[name])
    finally:
        if pool is not None:
            pool.shutdown()
    total_weight = float(sum(updates.num_examples[:num_updates]))
    return {
        name: np.divide(total, total_weight, out=total).astype(np.float32)
        for name, total in totals.items()
    }


TUNED_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(2**28),
}
"""glibc keeps freed blocks up to 32 MiB for reuse instead of unmapping them (a what-if)."""
STREAM_VARIANTS = (
    ("plain", "fedsilo, files", False, False),
    ("admit", "fedsilo + admission, files", True, False),
    ("tuned", "if: fedsilo + MALLOC_* env", False, True),
)
"""(key, label, admit, tuned malloc) of the fedsilo measurements run for every cell."""
STAGES = (
    ("read", "read: store.get"),
    ("sha256", "sha256 (admission)"),
    ("decode", "decode_weights (copy)"),
    ("finite", "isfinite(x).all()"),
    ("accumulate", "StreamingWeightedMean.add"),
)
WHAT_IF_STAGES = (
    ("read_into", "if: readinto reused buffer"),
    ("zero_copy", "if: frombuffer views"),
    ("add_product", "if: np.add(total, x*w)"),
    ("scale_f32", "if: x*=w (f32); total+=x"),
)
WHAT_IF_STREAMS = (
    ("lean", "if: lean stream", False, False),
    ("lean_admit", "if: lean + sha256 + finite", True, False),
    ("lean_admit_prefetch", "if: same, prefetch thread", True, True),
)


def _time_stages(updates: UpdateSet, num_updates: int) -> dict[str, float]:
    """Seconds per stage over ``num_updates`` files, each stage timed alone on each update."""
    exchange = Exchange(LocalDirectoryStore(updates.root), FEDERATION_ID)
    specs = tensor_specs(updates.num_params)
    mean = StreamingWeightedMean(specs)
    alt_totals = {name: np.zeros(spec.shape, dtype=np.float64) for name, spec in specs.items()}
    buffer = bytearray(updates.model_bytes + 2**16)
    seconds = dict.fromkeys([key for key, _ in STAGES + WHAT_IF_STAGES], 0.0)

    @contextlib.contextmanager
    def timing(stage: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        seconds[stage] += time.perf_counter() - started

    for site_id, examples in zip(
        updates.site_ids[:num_updates], updates.num_examples[:num_updates], strict=True
    ):
        weight = float(examples)
        with timing("read"):
            data = exchange.read_update_weights(ROUND_INDEX, site_id)
        with timing("sha256"):
            sha256_hex(data)
        with timing("decode"):
            weights = decode_weights(data)
        with timing("finite"):
            all(bool(np.isfinite(x).all()) for x in weights.values())
        with timing("accumulate"):
            mean.add(weights, weight)
        del data
        key = exchange.layout.update_weights_key(ROUND_INDEX, site_id)
        with timing("read_into"):
            _read_into(updates.root / key, buffer)
        with timing("zero_copy"):
            _payload_views(buffer)
        with timing("add_product"):
            for name, x in weights.items():
                np.add(alt_totals[name], np.multiply(x, weight), out=alt_totals[name])
        with timing("scale_f32"):  # last: scales the decoded copy in place
            for name, x in weights.items():
                np.add(alt_totals[name], np.multiply(x, weight, out=x), out=alt_totals[name])
        del weights
    return seconds


def profile_stages(updates: UpdateSet, num_updates: int) -> dict[str, float]:
    """Worker body: the stage breakdown.

    Stages are timed one after another on the same update, so each is measured alone; their
    sum is close to, not exactly, the ``fedsilo + admission`` loop.
    """
    return _time_stages(updates, num_updates)


def measure_lean(
    updates: UpdateSet, num_updates: int, verify: bool, prefetch: bool, min_total_s: float
) -> StreamMeasurement:
    """Worker body: time and peak RSS of one what-if stream, in a fresh process."""
    start_rss = psutil.Process().memory_info().rss
    seconds, _ = _best_of(
        lambda: stream_lean(updates, num_updates, verify=verify, prefetch=prefetch), min_total_s
    )
    return StreamMeasurement(seconds, start_rss, _peak_rss_bytes())


# ---- the grid and its table -----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the table; ``None`` prints as a dash."""

    cell: str
    method: str
    gbps: float | None = None
    vs_numpy_f32: float | None = None
    vs_numpy_f64: float | None = None
    peak_rss_mb: float | None = None
    peak_per_model: float | None = None
    growth_per_model: float | None = None
    note: str = ""


@dataclass
class GridReport:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _in_fresh_process(
    run: Callable[..., _T], *args: Any, env: Mapping[str, str] | None = None
) -> _T:
    """Run ``run(*args)`` in a newly spawned interpreter, so its peak RSS is its own.

    ``env`` is added to the child's environment (read by glibc at start-up, so it cannot be
    set from inside the child).
    """
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(run, *args).result()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _label(num_params: int) -> str:
    if num_params % 1_000_000 == 0:
        return f"{num_params // 1_000_000}M"
    if num_params % 1_000 == 0:
        return f"{num_params // 1_000}k"
    return str(num_params)


def _ratio(gbps: float | None, baseline_seconds: float | None, input_bytes: int) -> float | None:
    if gbps is None or baseline_seconds is None:
        return None
    return gbps / (input_bytes / baseline_seconds / 1e9)


def _cell_rows(
    updates: UpdateSet,
    num_updates: int,
    numpy_result: NumpyMeasurement,
    streams: dict[str, StreamMeasurement],
) -> list[Row]:
    cell = f"N={num_updates} P={_label(updates.num_params)}"
    input_bytes = num_updates * updates.model_bytes
    model = updates.model_bytes
    rows: list[Row] = []
    for label, seconds in (
        ("numpy f32 in place, in RAM", numpy_result.seconds_f32),
        ("numpy f64 in place, in RAM", numpy_result.seconds_f64),
    ):
        gbps = None if seconds is None else input_bytes / seconds / 1e9
        note = numpy_result.note or f"input in RAM: {input_bytes / 1e6:,.0f} MB"
        rows.append(
            Row(
                cell,
                label,
                gbps,
                _ratio(gbps, numpy_result.seconds_f32, input_bytes),
                _ratio(gbps, numpy_result.seconds_f64, input_bytes),
                note=note,
            )
        )
    for key, label, _, _ in STREAM_VARIANTS:
        rows.append(_stream_row(cell, label, streams[key], input_bytes, model, numpy_result))
    rows.append(
        Row(
            cell,
            "Flower-style hold-all",
            peak_rss_mb=input_bytes / 1e6,
            peak_per_model=float(num_updates),
            note="computed: N x P x 4 B",
        )
    )
    return rows


def _stream_row(
    cell: str,
    label: str,
    measured: StreamMeasurement,
    input_bytes: int,
    model_bytes: int,
    numpy_result: NumpyMeasurement,
) -> Row:
    gbps = input_bytes / measured.seconds / 1e9
    return Row(
        cell,
        label,
        gbps,
        _ratio(gbps, numpy_result.seconds_f32, input_bytes),
        _ratio(gbps, numpy_result.seconds_f64, input_bytes),
        peak_rss_mb=measured.peak_rss_bytes / 1e6,
        peak_per_model=measured.peak_rss_bytes / model_bytes,
        growth_per_model=(measured.peak_rss_bytes - measured.start_rss_bytes) / model_bytes,
        note=f"start RSS {measured.start_rss_bytes / 1e6:.0f} MB",
    )


def _stage_rows(
    updates: UpdateSet,
    num_updates: int,
    seconds: dict[str, float],
    lean: dict[str, StreamMeasurement],
    numpy_result: NumpyMeasurement,
) -> list[Row]:
    cell = f"stages N={num_updates} P={_label(updates.num_params)}"
    input_bytes = num_updates * updates.model_bytes
    current = sum(seconds[key] for key, _ in STAGES)
    rows = []
    for key, label in STAGES + WHAT_IF_STAGES:
        gbps = input_bytes / seconds[key] / 1e9
        rows.append(Row(cell, label, gbps, note=f"share {seconds[key] / current:.0%}"))
    for key, label, _, _ in WHAT_IF_STREAMS:
        rows.append(
            _stream_row(cell, label, lean[key], input_bytes, updates.model_bytes, numpy_result)
        )
    return rows


def run_grid(
    grid_num_updates: Sequence[int],
    grid_num_params: Sequence[int],
    *,
    workdir: Path | None = None,
    min_total_s: float = MIN_TOTAL_S,
    with_stages: bool = True,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> GridReport:
    """Measure every (N, P) cell; update files live in a temporary folder removed at the end.

    Files for the largest N are written once per P and the first N of them used for each
    cell, so disk use peaks at max(N) x max(P) x 4 bytes.
    """
    report = GridReport()
    largest = max(grid_num_updates)
    for num_params in grid_num_params:
        folder = Path(tempfile.mkdtemp(prefix="fedsilo-bench-", dir=workdir))
        try:
            needed = largest * num_params * BYTES_PER_PARAM + DISK_MARGIN_BYTES
            free = shutil.disk_usage(folder).free
            if needed > free:
                report.notes.append(
                    f"P={_label(num_params)} skipped: needs {needed / 2**30:.1f} GiB of disk in "
                    f"{folder.parent}, {free / 2**30:.1f} GiB free"
                )
                continue
            log(f"P={_label(num_params)}: writing {largest} update files to {folder}")
            started = time.perf_counter()
            updates = write_updates(folder, largest, num_params, seed)
            written = largest * num_params * BYTES_PER_PARAM
            report.notes.append(
                f"P={_label(num_params)}: generated and wrote {largest} files "
                f"({written / 1e9:.2f} GB, fsync'd) in {time.perf_counter() - started:.1f} s"
            )
            streams: dict[int, dict[str, StreamMeasurement]] = {}
            for num_updates in grid_num_updates:
                log(f"P={_label(num_params)} N={num_updates}: fedsilo (fresh processes)")
                streams[num_updates] = {
                    key: _in_fresh_process(
                        measure_stream,
                        updates,
                        num_updates,
                        admit,
                        min_total_s,
                        env=TUNED_MALLOC_ENV if tuned else None,
                    )
                    for key, _, admit, tuned in STREAM_VARIANTS
                }
            stages: dict[str, float] | None = None
            lean: dict[str, StreamMeasurement] = {}
            if with_stages:
                log(f"P={_label(num_params)} N={largest}: stage breakdown and what-ifs")
                stages = _in_fresh_process(profile_stages, updates, largest)
                for key, _, verify, prefetch in WHAT_IF_STREAMS:
                    lean[key] = _in_fresh_process(
                        measure_lean, updates, largest, verify, prefetch, min_total_s
                    )
            log(f"P={_label(num_params)}: numpy in-memory baselines")
            baselines = _in_fresh_process(measure_numpy, updates, grid_num_updates, min_total_s)
            for num_updates in grid_num_updates:
                report.rows.extend(
                    _cell_rows(updates, num_updates, baselines[num_updates], streams[num_updates])
                )
            if stages is not None:
                report.rows.extend(_stage_rows(updates, largest, stages, lean, baselines[largest]))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(report: GridReport, title: str) -> Table:
    table = Table(title=title, title_justify="left", caption_justify="left")
    for header in ("cell", "method", "GB/s", "x numpy f32", "x numpy f64"):
        table.add_column(header, justify="right" if header.startswith(("GB", "x ")) else "left")
    for header in ("peak RSS MB", "peak / model", "growth / model"):
        table.add_column(header, justify="right")
    table.add_column("note")
    previous_cell = None
    for row in report.rows:
        if previous_cell is not None and row.cell != previous_cell:
            table.add_section()
        previous_cell = row.cell
        table.add_row(
            row.cell,
            row.method,
            _fmt(row.gbps, ".2f"),
            _fmt(row.vs_numpy_f32, ".2f"),
            _fmt(row.vs_numpy_f64, ".2f"),
            _fmt(row.peak_rss_mb, ",.0f"),
            _fmt(row.peak_per_model, ".1f"),
            _fmt(row.growth_per_model, ".1f"),
            row.note,
        )
    table.caption = "\n".join(
        [
            "GB/s: N x P x 4 bytes of float32 input consumed per second, best of up to "
            f"{MAX_REPEATS} runs. Update files are in the page cache (just written).",
            "peak RSS: ru_maxrss of a freshly spawned process running one measurement; "
            "model = P x 4 bytes; growth = peak minus the RSS before the loop "
            "(interpreter, numpy, fedsilo imports).",
            "Stage rows time each step alone over the largest N; share = of the sum of the five "
            "current stages. 'if:' rows are what-ifs, not fedsilo code today: lean stream = "
            "readinto a reused buffer, zero-copy views, x *= w in float32, float64 sum "
            "(bypasses the store API); prefetch = read + sha256 of the next file in a thread; "
            f"MALLOC_* env = {' '.join(f'{k}={v}' for k, v in TUNED_MALLOC_ENV.items())}.",
            "Stage rows run in one process after other work, so their allocator is warm: the "
            "'read' stage can look faster there than inside the fresh-process 'fedsilo' rows.",
            *report.notes,
        ]
    )
    return table


def main(quick: bool) -> None:
    """Entry point for ``python -m bench``."""
    console = Console() if sys.stdout.isatty() else Console(width=160)
    grid_n = QUICK_NUM_UPDATES if quick else FULL_NUM_UPDATES
    grid_p = QUICK_NUM_PARAMS if quick else FULL_NUM_PARAMS
    started = time.perf_counter()
    report = run_grid(grid_n, grid_p, log=lambda line: console.print(f"  {line}"))
    title = f"Streaming FedAvg from files vs in-place numpy ({time.perf_counter() - started:.0f} s)"
    console.print(render(report, title))
