"""Weighted FedAvg of N update files: fedsilo's server path next to the limit and to Flower.

Why this benchmark exists: the aggregator admits and averages N hospital updates of P float32
parameters, holding one update (plus a few being checked ahead) in memory at a time (docs/design.md,
a round, steps 3 and 4). How close that comes to the limit of the machine, and what it costs
against Flower, must be measured side by side, on the same files, in the same run. For each
cell (N, P) a federation is written to a local exchange (global model of round 1, then N
update files with their manifests inside, as hospitals write them), and these contenders run
on it:

- ``limit``: numpy over the mmapped files, ``acc += w * x`` in place with a float32 accumulator
  and a preallocated scratch (no allocation per update, no copy of the file): the practical
  memory-bandwidth limit of averaging these files, and the denominator of "x limit";
- ``limit_f64``: the same over the same mapped files with a float64 accumulator, as the
  aggregator must sum (within 1e-6 of a float64 mean), a cached float64 slice at a time, no
  NaN/Inf scan and no admission: the ceiling of any numpy sum at that accuracy. It moves 20
  bytes per parameter against the limit's 12 (the float64 sum read and written), so it cannot
  reach the limit itself;
- ``sha256``: mmap and sha256 of every file on two threads, nothing else: the ceiling of any
  path that hashes every byte, as admission must (the ledger records each update's sha256);
- ``server``: what ``fedsilo server run`` runs for a round on a local-folder exchange, on the
  same ``RoundLoop`` code: open the round (read and decode the global model), admit every
  answer (size, header, manifest, replay, sha256 hashed on worker threads, names/dtypes/shapes,
  NaN/Inf; checked ahead) while FedAvg adds each to its float64 sum, then the mean;
- ``server_s3``: the same round on the aggregator's S3 path: the store hands each update over
  with the SHA-256 its writer computed (``StoredChecksumStore``, as S3 hands over the checksum
  it verified on upload), so the update is not hashed again. A local folder stands in for S3
  so that the row measures the aggregator, not moto's HTTP server;
- ``server_s3_numpy``: the ``server_s3`` round with FedAvg's numpy slice loop in place of the
  compiled sum (``fl_core.compiled_sum``), for reading that loop's gain in the same run;
- ``stream``: a STREAM-like memory-bandwidth figure of the same machine in the same run
  (``a = b + c`` over float64 arrays far larger than the caches, 24 bytes counted per
  element, the best of a few passes), for reading the other rows against;
- ``no_admission``: fedsilo's codec and ``StreamingWeightedMean`` alone over the same files,
  with no admission check (what admission costs);
- ``flower``: Flower's ``aggregate`` in its own environment (``bench/.venv-flower``), as two
  rows of the same processes: loading the N files into memory plus ``aggregate``, and
  ``aggregate`` alone on inputs already in memory (its API takes all N updates at once).

Every run is a freshly started process (so its peak RSS, ``VmHWM``, is its own); the clock runs
inside it around the work only (not the interpreter's start or its imports). Contenders are
interleaved: each repeat runs all of them once, in an order rotated from the last repeat, so
load from elsewhere on the machine falls on all of them alike; rows give min and median.
Files are in the page cache (just written), the aggregator's best case on a local exchange.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import mmap
import multiprocessing
import os
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import psutil
import safetensors.numpy
import structlog
from rich.table import Table

from bench._tables import write_rows
from bench._timing import bench_console, interleave
from bench._timing import fmt as _fmt
from fl_core import admission, aggregation, compiled_sum
from fl_core.aggregation import CHUNK_ELEMENTS, COMPILED_MIN_ELEMENTS, StreamingWeightedMean
from fl_core.config import FederationConfig, load_config
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.store import ObjectStore
from fl_core.serialisation import (
    TensorSpec,
    decode_weights,
    read_header,
    view_weights,
)
from fl_core.types import ObjectKey, Sha256Hex, SiteId, Weights
from fl_server.aggregator import FedAvgAggregator
from fl_server.allocator import keep_freed_buffers
from fl_server.round_loop import RoundLoop

FEDERATION_ID = "bench"
ROUND_INDEX = 1
OWNER_ID = "bench-aggregator"
"""Every measured aggregator process takes the federation's lease under this one name."""
NUM_TENSORS = 4
"""P parameters are split over a few tensors, as in a small model's layers."""
BYTES_PER_PARAM = 4
FULL_NUM_UPDATES = (10, 50, 200)
FULL_NUM_PARAMS = (1_000_000, 10_000_000)
QUICK_NUM_UPDATES = (10, 50)
QUICK_NUM_PARAMS = (1_000_000,)
REPEATS = 3
MEMORY_MARGIN_BYTES = 3 * 2**30
"""Left free for the page cache holding the files and for everyone else on the machine."""
DISK_MARGIN_BYTES = 2 * 2**30
RUN_TIMEOUT_S = 1200
STREAM_ELEMENTS = 1 << 24
"""float64 elements per STREAM array: 128 MiB each, far beyond any cache."""
STREAM_PASSES = 5

REPO_ROOT = Path(__file__).resolve().parents[1]

_T = TypeVar("_T")
F32Array = npt.NDArray[np.float32]


# ---- the federation on disk -----------------------------------------------------------------


@dataclass(frozen=True)
class UpdateSet:
    """A round-1 federation under ``root``: its global model and N update files (picklable)."""

    root: Path
    num_params: int
    site_ids: tuple[SiteId, ...]
    num_examples: tuple[int, ...]
    global_sha256: str
    config_json: str
    """The aggregator's config as written: a measured process uses it as it was (code edited
    while the bench runs, new defaults, must not make it a different federation)."""

    @property
    def model_bytes(self) -> int:
        return self.num_params * BYTES_PER_PARAM

    def paths(self, num_updates: int | None = None) -> list[Path]:
        layout = Exchange(LocalDirectoryStore(self.root), FEDERATION_ID).layout
        return [
            self.root / layout.update_weights_key(ROUND_INDEX, site_id)
            for site_id in self.site_ids[:num_updates]
        ]


def tensor_sizes(num_params: int) -> dict[str, int]:
    """Split ``num_params`` over ``NUM_TENSORS`` named tensors (the last takes the rest)."""
    count = min(NUM_TENSORS, num_params)
    base = num_params // count
    sizes = {f"layer{i}.weight": base for i in range(count - 1)}
    sizes[f"layer{count - 1}.weight"] = num_params - base * (count - 1)
    return sizes


def tensor_specs(num_params: int) -> dict[str, TensorSpec]:
    return {name: TensorSpec("float32", (size,)) for name, size in tensor_sizes(num_params).items()}


def bench_config(num_sites: int) -> FederationConfig:
    """The aggregator's config: one training round, every site must answer."""
    return load_config(
        overrides={
            "federation_id": FEDERATION_ID,
            "rounds": 1,
            "round.min_sites": max(2, num_sites),
            "round.deadline_s": 3600.0,
            "round.lease_s": 3600.0,
            "data.synthetic.hospitals": max(2, num_sites),
        }
    )


class StoredChecksumStore(LocalDirectoryStore):
    """A local folder that keeps each update's SHA-256 as S3 keeps its checksum: given by the
    writer (``put_update``), handed back with the bytes (``get_verified``), never recomputed.

    The digests live under ``.checksums/`` beside the federation, outside every prefix the
    aggregator lists.
    """

    vouches_for_updates = True

    def _checksum_path(self, key: ObjectKey) -> Path:
        return self.root / ".checksums" / f"{key}.sha256"

    def put_update(self, key: ObjectKey, data: bytes, sha256: Sha256Hex) -> None:
        self.put_new(key, data)
        path = self._checksum_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sha256, encoding="ascii")

    def get_verified(
        self, key: ObjectKey, max_bytes: int | None = None
    ) -> tuple[bytes, Sha256Hex | None]:
        data, _ = super().get_verified(key, max_bytes)
        return data, self._checksum_path(key).read_text(encoding="ascii")


def _site_ids(num_updates: int) -> tuple[SiteId, ...]:
    return tuple(f"site-{i:03d}" for i in range(num_updates))


def _round_loop(
    root: Path,
    config: FederationConfig,
    num_updates: int,
    initial: Weights | None = None,
    *,
    s3_path: bool = False,
) -> RoundLoop:
    store: ObjectStore = StoredChecksumStore(root) if s3_path else LocalDirectoryStore(root)
    exchange = Exchange(store, FEDERATION_ID)
    sites = list(_site_ids(num_updates))
    return RoundLoop(exchange, FedAvgAggregator(), config, sites, initial, owner_id=OWNER_ID)


def write_updates(root: Path, num_updates: int, num_params: int, seed: int) -> UpdateSet:
    """Start a federation under ``root`` and write ``num_updates`` distinct random updates.

    The aggregator publishes round 1 (``RoundLoop`` itself, as ``server run`` would), then each
    site writes its update with its manifest inside, naming that round's global model. Every
    file has its own random contents and nonce, so admission's sha256 and nonce rules see N
    genuinely different updates.
    """
    sizes = tensor_sizes(num_params)
    initial: Weights = {name: np.zeros(size, np.float32) for name, size in sizes.items()}
    config = bench_config(num_updates)
    loop = _round_loop(root, config, num_updates, initial, s3_path=True)  # digests kept too
    loop.keeper.acquire(loop._first_state)
    published = loop.exchange.read_global_manifest(ROUND_INDEX)
    assert published is not None
    rng = np.random.default_rng(seed)
    site_ids = _site_ids(num_updates)
    num_examples = tuple(int(n) for n in rng.integers(50, 5_000, size=num_updates))
    for site_id, examples in zip(site_ids, num_examples, strict=True):
        arrays = {name: rng.random(size, dtype=np.float32) - 0.5 for name, size in sizes.items()}
        manifest = UpdateManifest(
            task="train",
            federation_id=FEDERATION_ID,
            site_id=site_id,
            round_index=ROUND_INDEX,
            global_sha256=published.sha256,
            num_examples=examples,
            nonce=rng.bytes(16).hex(),
        )
        data = safetensors.numpy.save(arrays, metadata=admission.update_metadata(manifest))
        loop.exchange.write_update(manifest, bytes(data))
    return UpdateSet(
        root, num_params, site_ids, num_examples, published.sha256, config.model_dump_json()
    )


def read_updates(updates: UpdateSet, stop: int, start: int = 0) -> list[tuple[Weights, float]]:
    """Updates ``start..stop-1`` in memory with their weights (for tests)."""
    exchange = Exchange(LocalDirectoryStore(updates.root), FEDERATION_ID)
    return [
        (decode_weights(exchange.read_update_weights(ROUND_INDEX, site_id)), float(examples))
        for site_id, examples in zip(
            updates.site_ids[start:stop], updates.num_examples[start:stop], strict=True
        )
    ]


# ---- the contenders (each runs in a fresh process) ------------------------------------------


def run_server_round(updates: UpdateSet, *, s3_path: bool = False) -> Weights:
    """One round as ``fedsilo server run`` does it, on ``RoundLoop``'s own methods.

    Open the round (global model read, decoded, registry read), admit every answer with all
    checks (ahead on worker threads, summed in listing order), then the mean. It stops short
    of writing result.json, the ledger and the next global model, so the same files serve
    every repeat. Taking the lease (once per aggregator process: the config's hash compared
    and one small state.json written, as every resumed aggregator does) is part of each repeat.
    ``s3_path``: each update's digest comes with it from the store, as on S3.
    """
    config = FederationConfig.model_validate_json(updates.config_json)
    loop = _round_loop(updates.root, config, len(updates.site_ids), s3_path=s3_path)
    if loop.exchange.read_state() is None:
        raise RuntimeError(f"no federation state under {updates.root}")
    state = loop.keeper.acquire(loop._first_state)
    current = loop._open(state)
    state = loop._collect(state, current)
    rejected = [d for d in state.decisions.values() if d.status != "accepted"]
    if rejected or len(state.decisions) != len(updates.site_ids):
        raise RuntimeError(f"the bench's own updates were not all accepted: {rejected[:3]}")
    source = "s3_checksum" if s3_path else "computed"
    if any(d.sha256_source != source for d in state.decisions.values()):
        raise RuntimeError(f"the round did not take its digests from {source}")
    return loop.aggregator.finish()


def stream_fedsilo(updates: UpdateSet, num_updates: int) -> Weights:
    """fedsilo's codec and float64 streaming sum, one file at a time, with no admission check."""
    exchange = Exchange(LocalDirectoryStore(updates.root), FEDERATION_ID)
    mean = StreamingWeightedMean(tensor_specs(updates.num_params))
    for site_id in updates.site_ids[:num_updates]:
        data = exchange.read_update_weights(ROUND_INDEX, site_id)
        header = read_header(data)
        manifest = UpdateManifest.model_validate_json(admission.embedded_manifest(header.metadata))
        mean.add(view_weights(data, header), float(manifest.num_examples))
        del data  # one update in memory at a time
    return mean.result()


def _payload_views(buffer: Any) -> dict[str, F32Array]:
    """Zero-copy float32 views of the tensors in safetensors bytes (the files are ours)."""
    (header_len,) = struct.unpack("<Q", buffer[:8])
    header = json.loads(bytes(buffer[8 : 8 + header_len]))
    base = 8 + header_len
    views: dict[str, F32Array] = {}
    for name, entry in sorted(header.items()):
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        views[name] = np.frombuffer(
            buffer, dtype=np.float32, count=(end - start) // 4, offset=base + start
        )
    return views


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap]:
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield mapped
    finally:
        mapped.close()


def accumulate_mmap(paths: Sequence[Path], weights: Sequence[float]) -> dict[str, F32Array]:
    """The limit: ``acc += w * x`` in place over mmapped files, float32, no allocation per file."""
    acc: dict[str, F32Array] = {}
    scratch: dict[str, F32Array] = {}
    for path, weight in zip(paths, weights, strict=True):
        with _mapped(path) as mapped:
            views = _payload_views(mapped)
            if not acc:
                acc = {name: np.zeros(x.shape, np.float32) for name, x in views.items()}
                scratch = {name: np.empty(x.shape, np.float32) for name, x in views.items()}
            for name, x in views.items():
                np.multiply(x, np.float32(weight), out=scratch[name])
                np.add(acc[name], scratch[name], out=acc[name])
            del views, x  # the views must go before the mapping closes
    total = np.float32(sum(weights))
    return {name: np.divide(a, total, out=a) for name, a in acc.items()}


def accumulate_mmap_f64(paths: Sequence[Path], weights: Sequence[float]) -> dict[str, F32Array]:
    """The float64 ceiling: ``acc64 += w * x`` over mmapped files, slice by slice in cache."""
    acc: dict[str, npt.NDArray[np.float64]] = {}
    scratch = np.empty(CHUNK_ELEMENTS, np.float64)
    for path, weight in zip(paths, weights, strict=True):
        with _mapped(path) as mapped:
            views = _payload_views(mapped)
            if not acc:
                acc = {name: np.zeros(x.shape, np.float64) for name, x in views.items()}
            for name, x in views.items():
                total = acc[name]
                for low in range(0, x.size, CHUNK_ELEMENTS):
                    high = min(low + CHUNK_ELEMENTS, x.size)
                    part = scratch[: high - low]
                    part[...] = x[low:high]
                    part *= weight
                    total[low:high] += part
            del views, x  # the views must go before the mapping closes
    total_weight = sum(weights)
    return {name: (a / total_weight).astype(np.float32) for name, a in acc.items()}


def stream_add_seconds(elements: int = STREAM_ELEMENTS, passes: int = STREAM_PASSES) -> float:
    """The fastest of ``passes`` runs of ``a = b + c`` over float64 arrays (STREAM's Add)."""
    b = np.full(elements, 1.0)
    c = np.full(elements, 2.0)
    a = np.empty(elements)
    best = math.inf
    for _ in range(passes):
        started = time.perf_counter()
        np.add(b, c, out=a)
        best = min(best, time.perf_counter() - started)
    return best


def stream_bytes(elements: int = STREAM_ELEMENTS) -> int:
    """What STREAM counts for Add: two arrays read, one written."""
    return 3 * 8 * elements


def hash_files(paths: Sequence[Path], threads: int = 2) -> list[str]:
    """mmap and sha256 every file on ``threads`` threads (hashlib releases the GIL)."""

    def digest(path: Path) -> str:
        with _mapped(path) as mapped:
            return hashlib.sha256(mapped).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(digest, paths))


@dataclass(frozen=True)
class Sample:
    """One run of one contender: seconds inside the process, its RSS before and at peak."""

    seconds: float
    start_rss_bytes: int
    peak_rss_bytes: int
    load_seconds: float | None = None
    """Flower only: loading its inputs, before ``seconds`` of ``aggregate``."""
    before_load_rss_bytes: int | None = None
    """Flower only: RSS before loading (``start_rss_bytes`` is after)."""
    prepare_seconds: float | None = None
    """fedsilo's rows on large models: the compiled sum's start-up, before the clock."""


def peak_rss_bytes() -> int:
    """This process's ``VmHWM``: ``ru_maxrss`` would carry the parent's over ``execve``."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _quiet_logs() -> None:
    """The server path logs each decision; here at WARNING, so the table is not buried."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def measure(contender: str, updates: UpdateSet) -> Sample:
    """Worker body, run in a fresh process: one timed run of ``contender`` on ``updates``."""
    _quiet_logs()
    num_updates = len(updates.site_ids)
    weights = [float(n) for n in updates.num_examples]
    work: Callable[[], object]
    if contender == "limit":
        work = lambda: accumulate_mmap(updates.paths(), weights)  # noqa: E731
    elif contender == "limit_f64":
        work = lambda: accumulate_mmap_f64(updates.paths(), weights)  # noqa: E731
    elif contender == "sha256":
        work = lambda: hash_files(updates.paths())  # noqa: E731
    elif contender == "server":
        work = lambda: run_server_round(updates)  # noqa: E731
    elif contender == "server_s3":
        work = lambda: run_server_round(updates, s3_path=True)  # noqa: E731
    elif contender == "server_s3_numpy":
        aggregation.COMPILED_MIN_ELEMENTS = 1 << 62  # this process only: every model on numpy
        work = lambda: run_server_round(updates, s3_path=True)  # noqa: E731
    elif contender == "stream":
        start_rss = psutil.Process().memory_info().rss
        return Sample(stream_add_seconds(), start_rss, peak_rss_bytes())
    elif contender == "no_admission":
        keep_freed_buffers()  # as RoundLoop sets it up
        work = lambda: stream_fedsilo(updates, num_updates)  # noqa: E731
    else:
        raise ValueError(f"unknown contender {contender!r}")
    prepare_seconds = None
    if contender in FEDSILO_SUMS and updates.num_params >= COMPILED_MIN_ELEMENTS:
        # once per aggregator process, like its imports (numba's import and the loop loaded
        # from its on-disk cache): a long-running aggregator pays it once, not per round
        prepare_started = time.perf_counter()
        compiled_sum.prepare()
        prepare_seconds = time.perf_counter() - prepare_started
    start_rss = psutil.Process().memory_info().rss
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    return Sample(seconds, start_rss, peak_rss_bytes(), prepare_seconds=prepare_seconds)


def _in_fresh_process(run: Callable[..., _T], *args: Any) -> _T:
    """Run ``run(*args)`` in a newly spawned interpreter, so its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run, *args).result()


def measure_flower(python: Path, updates: UpdateSet, result_path: Path | None = None) -> Sample:
    """Flower's ``aggregate`` on the same files, in a fresh Flower-environment process."""
    spec = {
        "paths": [str(path) for path in updates.paths()],
        "num_examples": list(updates.num_examples),
        "min_total_s": 0.0,
        "result": None if result_path is None else str(result_path),
    }
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        [str(python), str(REPO_ROOT / "bench" / "flower" / "flower_aggregate.py")],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Flower aggregate failed: {(done.stderr.strip() or '?')[-300:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return Sample(
        out["seconds"],
        out["start_rss_bytes"],
        out["peak_rss_bytes"],
        out["load_seconds"],
        out["before_load_rss_bytes"],
    )


# ---- the grid --------------------------------------------------------------------------------

CONTENDERS = (
    "stream",
    "limit",
    "limit_f64",
    "sha256",
    "server_s3",
    "server_s3_numpy",
    "server",
    "no_admission",
    "flower",
)
LABELS = {
    "stream": "STREAM-like a = b + c, float64 (memory bandwidth)",
    "limit": "numpy mmap f32, acc += w*x in place (limit)",
    "limit_f64": "numpy mmap, float64 acc += w*x in cached slices (f64 ceiling)",
    "sha256": "mmap + sha256 only, 2 threads (hashing ceiling)",
    "server_s3": "fedsilo server run, S3 path: S3's checksum, no hash",
    "server_s3_numpy": "the same, FedAvg in numpy slices (no compiled sum)",
    "server": "fedsilo server run, local folder: admission + FedAvg",
    "no_admission": "fedsilo codec + sum, no admission",
    "flower_load": "Flower: load files + aggregate",
    "flower": "Flower: aggregate, inputs in RAM (arithmetic only)",
}
FEDSILO_SUMS = ("server", "server_s3", "no_admission")
"""The contenders that sum with ``StreamingWeightedMean``."""
ROW_ORDER = (*CONTENDERS[:-1], "flower_load", "flower")
"""The table's rows: Flower's two rows come from the one ``flower`` run."""


@dataclass(frozen=True)
class Row:
    """One line of the table; ``None`` prints as a dash."""

    cell: str
    method: str
    min_s: float | None = None
    median_s: float | None = None
    input_bytes: int = 0
    x_limit: float | None = None
    peak_rss_mb: float | None = None
    growth_mb: float | None = None
    growth_per_model: float | None = None
    note: str = ""

    def gbps(self, seconds: float | None) -> float | None:
        return None if seconds is None else self.input_bytes / seconds / 1e9


@dataclass
class GridReport:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _label(num_params: int) -> str:
    if num_params % 1_000_000 == 0:
        return f"{num_params // 1_000_000}M"
    if num_params % 1_000 == 0:
        return f"{num_params // 1_000}k"
    return str(num_params)


def measure_cell(
    updates: UpdateSet,
    flower_python: Path | None,
    repeats: int,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, list[Sample]], dict[str, str]]:
    """Every contender ``repeats`` times, interleaved; also why any was not measured."""
    skipped: dict[str, str] = {}
    if flower_python is None:
        skipped["flower"] = "no Flower environment (make bench creates bench/.venv-flower)"
    else:
        # Flower holds N updates and N weighted copies of them at once, and the files must
        # stay in the page cache for the other contenders: N x P x 4 B three times over
        input_bytes = len(updates.site_ids) * updates.model_bytes
        needed = 3 * input_bytes + MEMORY_MARGIN_BYTES
        total = psutil.virtual_memory().total
        if needed > total:
            skipped["flower"] = (
                f"skipped: holds 2 x N x P x 4 B beside the N files in the page cache, "
                f"{needed / 2**30:.1f} GiB with a margin, {total / 2**30:.1f} GiB in the machine"
            )

    def run(contender: str) -> Callable[[], Sample]:
        if contender == "flower":
            assert flower_python is not None
            return lambda: measure_flower(flower_python, updates)
        return lambda: _in_fresh_process(measure, contender, updates)

    contenders = {c: run(c) for c in CONTENDERS if c not in skipped}
    samples = interleave(contenders, repeats, lambda line: log(f"  {line}"))
    return samples, skipped


def _cell_rows(
    cell: str, updates: UpdateSet, samples: dict[str, list[Sample]], skipped: dict[str, str]
) -> list[Row]:
    input_bytes = len(updates.site_ids) * updates.model_bytes
    limit_median = statistics.median(s.seconds for s in samples["limit"])
    rows = []
    for key in ROW_ORDER:
        source = "flower" if key == "flower_load" else key
        if source in skipped:
            rows.append(Row(cell, LABELS[key], note=skipped[source]))
            continue
        runs = samples[source]
        seconds = [s.seconds for s in runs]
        starts = [s.start_rss_bytes for s in runs]
        if key == "flower_load":
            seconds = [s.seconds + (s.load_seconds or 0.0) for s in runs]
            starts = [s.before_load_rss_bytes or s.start_rss_bytes for s in runs]
        peak = max(s.peak_rss_bytes for s in runs)
        growth = max(s.peak_rss_bytes - start for s, start in zip(runs, starts, strict=True))
        median = statistics.median(seconds)
        if key == "stream":
            rows.append(
                Row(cell, LABELS[key], min(seconds), median, stream_bytes(), None, peak / 1e6,
                    note="GB/s: bytes STREAM counts (2 read + 1 written), not update bytes")
            )  # fmt: skip
            continue
        note = {
            "server": "all checks on, sha256 hashed; decisions and sum in listing order",
            "server_s3": "all checks on, digest from the store; x limit goal >= 0.7",
            "flower": "growth: from after loading all N",
            "flower_load": "growth: from before loading",
        }.get(key, "")
        rows.append(
            Row(
                cell,
                LABELS[key],
                min(seconds),
                median,
                input_bytes,
                limit_median / median,
                peak / 1e6,
                growth / 1e6,
                growth / updates.model_bytes,
                note,
            )
        )
    return rows


def run_grid(
    grid_num_updates: Sequence[int],
    grid_num_params: Sequence[int],
    *,
    flower_python: Path | None = None,
    workdir: Path | None = None,
    repeats: int = REPEATS,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> GridReport:
    """Measure every (N, P) cell; each cell's federation is written, measured and removed."""
    _quiet_logs()
    report = GridReport()
    for num_params in grid_num_params:
        for num_updates in grid_num_updates:
            cell = f"N={num_updates} P={_label(num_params)}"
            folder = Path(tempfile.mkdtemp(prefix="fedsilo-bench-", dir=workdir))
            try:
                needed = num_updates * num_params * BYTES_PER_PARAM + DISK_MARGIN_BYTES
                free = shutil.disk_usage(folder).free
                if needed > free:
                    report.notes.append(
                        f"{cell} skipped: needs {needed / 2**30:.1f} GiB of disk, "
                        f"{free / 2**30:.1f} GiB free"
                    )
                    continue
                log(f"{cell}: writing the federation")
                updates = write_updates(folder, num_updates, num_params, seed)
                samples, skipped = measure_cell(updates, flower_python, repeats, log)
                report.rows.extend(_cell_rows(cell, updates, samples, skipped))
                prepared = [
                    sample.prepare_seconds
                    for contender in FEDSILO_SUMS
                    for sample in samples.get(contender, [])
                    if sample.prepare_seconds is not None
                ]
                if prepared:
                    report.notes.append(
                        f"{cell}: the compiled sum's start-up, once per process before the "
                        f"clock: median {statistics.median(prepared):.2f} s"
                    )
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    return report


def report_rows(report: GridReport) -> list[dict[str, Any]]:
    """The table's rows as figures (``None`` where the table prints a dash)."""
    return [
        {
            "cell": row.cell,
            "method": row.method,
            "gbps_min_time": row.gbps(row.min_s),
            "gbps_median": row.gbps(row.median_s),
            "min_s": row.min_s,
            "median_s": row.median_s,
            "bytes": row.input_bytes,
            "x_limit": row.x_limit,
            "peak_rss_mb": row.peak_rss_mb,
            "growth_mb": row.growth_mb,
            "growth_per_model": row.growth_per_model,
            "note": row.note,
        }
        for row in report.rows
    ]


def write_json(report: GridReport, title: str, directory: Path | None = None) -> Path:
    """``runs/bench/aggregation.json``: the rows as numbers, beside the printed table."""
    return write_rows("aggregation", title, report_rows(report), directory)


def render(report: GridReport, title: str, repeats: int = REPEATS) -> Table:
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("cell")
    table.add_column("method")
    for header in ("GB/s min-time", "GB/s median", "x limit", "peak RSS MB", "growth MB"):
        table.add_column(header, justify="right")
    table.add_column("growth / model", justify="right")
    table.add_column("note")
    previous_cell = None
    for row in report.rows:
        if previous_cell is not None and row.cell != previous_cell:
            table.add_section()
        previous_cell = row.cell
        table.add_row(
            row.cell,
            row.method,
            _fmt(row.gbps(row.min_s), ".2f"),
            _fmt(row.gbps(row.median_s), ".2f"),
            _fmt(row.x_limit, ".2f"),
            _fmt(row.peak_rss_mb, ",.0f"),
            _fmt(row.growth_mb, ",.0f"),
            _fmt(row.growth_per_model, ".1f"),
            row.note,
        )
    table.caption = "\n".join(
        [
            f"GB/s: N x P x 4 bytes of float32 updates per second; {repeats} runs of each "
            "contender, interleaved (each repeat in a rotated order), each a fresh process "
            "timed inside around the work; 'min-time' from the fastest run, 'median' from the "
            "median run. Files are in the page cache (just written).",
            "x limit: median time of the limit row / median time of this row (1.00 = as fast "
            "as numpy over the mmapped files).",
            "peak RSS: VmHWM of the process (interpreter and imports included), largest of "
            "the runs; growth: peak minus the RSS before the timed work; model = P x 4 bytes.",
            "Flower rows come from the same processes: each loads the N files (timed), then "
            "runs aggregate once (timed); 'arithmetic only' counts only the latter.",
            f"Machine: {os.cpu_count()} cores, load average at the end "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (other work on the machine "
            "slows every contender alike only on average: read medians, not single runs).",
            *report.notes,
        ]
    )
    return table


def main(quick: bool) -> None:
    """Entry point for ``python -m bench``."""
    from bench.flower_compare import flower_env_for_bench

    console, log = bench_console()
    env = flower_env_for_bench(log)
    grid_n = QUICK_NUM_UPDATES if quick else FULL_NUM_UPDATES
    grid_p = QUICK_NUM_PARAMS if quick else FULL_NUM_PARAMS
    started = time.perf_counter()
    report = run_grid(grid_n, grid_p, flower_python=env.python, log=log)
    title = (
        "Weighted FedAvg of N update files: fedsilo's server path, the limit and Flower "
        f"({time.perf_counter() - started:.0f} s)"
    )
    console.print(render(report, title))
    console.print(f"table written as JSON to {write_json(report, title)}")
